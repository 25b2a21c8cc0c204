"""The training loop (the course called this module `model`): one step, one epoch, validate, predict.

It knows nothing about layer groups, precompute or schedules: the learner hands it a model,
loaders, a layer optimizer and callbacks, and the callbacks do the rest. Under a launcher of
several processes it calls `distributed`'s hooks (each process trains on its share of every
batch under DistributedDataParallel; losses and metrics are reduced over all); with one
process they return at once.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import sum_geom, to_np
from .distributed import (describe, gather_rows, is_main, main_only_callback, mean_over_ranks,
                          shard_eval, shard_train, sum_over_ranks, wrap_model)
from .precision import FP32, Precision
from .progress import EpochTable, print_table_row, progress_bar

__all__ = ['FitState', 'fit', 'clip_grads', 'validate', 'predict_dl', 'to_device', 'forward', 'print_table_row',
           'epochs_for', 'metric_name']


@dataclass
class FitState:
    """What callbacks see: set `stop = True` to end training after the current batch."""
    layer_opt: Any
    n_batches: int
    n_epochs: int
    learn: Any = None
    model: Any = None
    epoch: int = 0
    iteration: int = 0
    stop: bool = False
    smooth_loss: float = float('nan')
    losses: list = field(default_factory=list)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a tensor (or a tuple/list of them) to `device`; image batches optionally go
    channels-last, the layout CPU and tensor-core convolutions run fastest in."""
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    if not isinstance(batch, torch.Tensor):
        return batch
    batch = batch.to(device, non_blocking=True)
    if channels_last and batch.ndim == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def forward(model: nn.Module, x: Any) -> torch.Tensor:
    # A batch of several inputs (a tuple) goes to the model as separate arguments.
    return model(*x) if isinstance(x, (list, tuple)) else model(x)


def _full(out: Any) -> Any:
    # Metrics and losses take float32 (autocast hands back float16/bfloat16 outputs).
    return out.float() if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16) else out


def clip_grads(opt: torch.optim.Optimizer, clip: Any) -> None:
    """Clip gradient norms: a number clips all parameters together (torch's `clip_grad_norm_`);
    one value per parameter group (None for no clip) clips each layer group on its own."""
    if clip is None:
        return
    if isinstance(clip, (int, float)):
        if clip > 0:
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g['params']], clip)
        return
    for g, c in zip(opt.param_groups, clip):
        if c is not None and c > 0:
            nn.utils.clip_grad_norm_(g['params'], c)


def _step(model: nn.Module, x: Any, y: torch.Tensor, opt: torch.optim.Optimizer, crit: Callable,
          clip: Any, precision: Precision, device: torch.device) -> float:
    with precision.autocast(device):
        out = forward(model, x)
        loss = crit(out, y)
    opt.zero_grad(set_to_none=True)
    precision.backward_step(loss, opt, lambda: clip_grads(opt, clip))
    return loss.item()


def fit(model: nn.Module, trn_dl: Any, val_dl: Iterable | None, layer_opt: Any, crit: Callable,
        n_epochs: int, *, metrics: Sequence[Callable] = (), callbacks: Sequence[Any] = (),
        activation: Callable | None = None, train_mode: Callable[[], None] | None = None,
        learn: Any = None, device: torch.device | None = None, channels_last: bool = False,
        clip: Any = None, quiet: bool = False, progress: bool = True,
        desc: str = 'epoch', precision: Precision = FP32) -> list[float]:
    """Train `model` for `n_epochs` and return the last `[val_loss, *metrics]`.

        fit(model, data.trn_dl, data.val_dl, layer_opt, F.cross_entropy, 3, metrics=[accuracy])

    `train_mode` puts the model into training mode each epoch (the learner's version keeps
    frozen layer groups, and their BatchNorm statistics, in eval mode). `quiet` drops the epoch
    table and the bars; `progress=False` only the bars (a head epoch on cached activations is
    over before a bar could draw). The bar reads `{desc} 2/7` and the smoothed loss.
    `precision` is the learner's autocast setting (`learn.to_fp16()`).
    """
    device = device or torch.device('cpu')
    quiet = quiet or not is_main()
    trn_dl, run = shard_train(trn_dl), wrap_model(model)  # both as they are for one process
    state = FitState(layer_opt=layer_opt, n_batches=len(trn_dl), n_epochs=n_epochs, learn=learn,
                     model=model)
    table = EpochTable(['epoch', 'trn_loss', 'val_loss', *[metric_name(m) for m in metrics], 'time'],
                       quiet=quiet, title=describe())
    _call(callbacks, 'on_train_begin', state)
    avg, vals = 0.0, []
    for epoch in range(n_epochs):
        state.epoch, start = epoch, time.perf_counter()
        (train_mode or model.train)()
        _call(callbacks, 'on_epoch_begin', state)
        bar = progress_bar(trn_dl, len(trn_dl), f'{desc} {epoch + 1}/{n_epochs}',
                           quiet=quiet or not progress)
        for x, y in bar:
            _call(callbacks, 'on_batch_begin', state)
            x, y = to_device((x, y), device, channels_last)
            loss = mean_over_ranks(_step(run, x, y, layer_opt.opt, crit, clip, precision, device),
                                   len(y))
            # The course's smoothed loss: a debiased exponential moving average (beta 0.98).
            avg = 0.98 * avg + 0.02 * loss
            state.smooth_loss = avg / (1 - 0.98 ** (state.iteration + 1))
            state.losses.append(loss)
            bar.set_postfix_str(f'loss {state.smooth_loss:.4f}', refresh=False)
            _call(callbacks, 'on_batch_end', state, loss)
            state.iteration += 1
            if state.stop:
                break
        bar.close()
        if val_dl is not None:
            vals = validate(model, val_dl, crit, metrics, activation=activation, device=device,
                            channels_last=channels_last, progress=progress and not quiet,
                            precision=precision)
            table.add([epoch, state.smooth_loss, *vals, f'{time.perf_counter() - start:.1f}s'])
        _call(callbacks, 'on_epoch_end', state, vals)
        if state.stop:
            break
    _call(callbacks, 'on_train_end', state)
    return vals


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    # A callback need not subclass sgdr.Callback: a hook it lacks is skipped.
    for cb in callbacks:
        fn = None if main_only_callback(cb) else getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


def _len(dl: Iterable) -> int | None:
    return len(dl) if hasattr(dl, '__len__') else None  # type: ignore[arg-type]


def metric_name(m: Callable) -> str:
    """A metric's name in the epoch table (and wherever an epoch's values are named)."""
    return getattr(m, '__name__', type(m).__name__)


@torch.inference_mode()
def validate(model: nn.Module, dl: Iterable, crit: Callable, metrics: Sequence[Callable] = (), *,
             activation: Callable | None = None, device: torch.device | None = None,
             channels_last: bool = False, progress: bool = False,
             precision: Precision = FP32) -> list[float]:
    """`[loss, *metrics]` over `dl`, each a batch-size-weighted mean. Metrics see the model's
    output after `activation` (log-probabilities or probabilities), as the course's did.
    `progress` shows a 'validating' bar. Several processes each take a part and add up their
    totals, so every one returns the same numbers."""
    model.eval()
    device = device or torch.device('cpu')
    dl, sharded = shard_eval(dl)
    totals = np.zeros(2 + len(metrics))  # the weighted sums, then the count
    for x, y in progress_bar(dl, _len(dl), 'validating', quiet=not (progress and is_main())):
        x, y = to_device((x, y), device, channels_last)
        with precision.autocast(device):
            out = forward(model, x)
        out = _full(out)
        preds = activation(out) if activation else out
        bs = len(y)
        totals += bs * np.array([crit(out, y).item(), *[float(m(preds, y)) for m in metrics], 1.0])
    if sharded:
        totals = sum_over_ranks(totals)
    return (totals[:-1] / max(totals[-1], 1)).tolist()


@torch.inference_mode()
def predict_dl(model: nn.Module, dl: Iterable, *, activation: Callable | None = None,
               device: torch.device | None = None, channels_last: bool = False,
               desc: str | None = None, precision: Precision = FP32
               ) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (after `activation`) and targets for every batch of `dl`, in loader order;
    with `desc`, under a progress bar of that name. Several processes each predict a part, and
    every one returns the whole, gathered."""
    model.eval()
    device = device or torch.device('cpu')
    dl, sharded = shard_eval(dl)
    preds, targs = [], []
    for x, y in progress_bar(dl, _len(dl), desc or '', quiet=desc is None or not is_main()):
        x = to_device(x, device, channels_last)
        with precision.autocast(device):
            out = forward(model, x)
        out = _full(out)
        preds.append(to_np(activation(out) if activation else out))
        targs.append(to_np(y))
    p, t = ((np.concatenate(preds), np.concatenate(targs)) if preds else
            (np.zeros((0,)), np.zeros((0,))))
    if sharded:
        p, t = gather_rows(p), gather_rows(t)
    return p, t


def epochs_for(n_cycle: int, cycle_len: float | None, cycle_mult: float) -> int:
    """Whole epochs that `n_cycle` cycles take (`fit(lr, 3, cycle_len=1, cycle_mult=2)` is 7)."""
    return math.ceil(sum_geom(cycle_len or 1, cycle_mult, n_cycle) - 1e-9)
