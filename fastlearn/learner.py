"""`Learner`: a model cut into layer groups, plus fit, lr_find, freeze/unfreeze and set_data;
fit_one_cycle and fine_tune come from `fine_tuning.FineTuning`, predict and TTA from
`predicting.Predicting`, save/load from `saving.Saving`, the loss, activation and metrics for the
data from `tasks`."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any, ContextManager

import numpy as np
import torch
from torch import nn

from .core import listify
from .distributed import describe, init_distributed, process_device, sync_module
from .layer_optimizer import LayerOptimizer, describe_opt_fn, lr_range, sgd_momentum
from .fine_tuning import BN_TRAINS_LR_MULT, FineTuning
from .predicting import Predicting
from .regression import PointPixels, ScaledPointLoss, points_size
from .model import fit as fit_loop
from .model import epochs_for, to_device
from .batch_norm import Saved, carry_groups, put_back
from .guards import BATCH_NORMS, DivergenceGuard, check_batch_norm_batches
from .one_cycle import OneCycle
from .precision import FP32, mixed_precision
from .saving import Saving, resolve_path
from .sgdr import CosAnneal, CycleSaver, Recorder, SaveBestModel, run_lr_finder
from .summary import ModelSummary, model_summary
from .tasks import task_defaults, task_kind

__all__ = ['Learner', 'BN_TRAINS_LR_MULT']

_BN_TRAINS = "trains, carried to the data's statistics as its group unfreezes"


def _clr_beta(args: Sequence[float]) -> OneCycle:
    """fastai 0.7's `use_clr_beta=(div, pct, mom_hi, mom_lo)`: up from lr/div and back over the
    first 100-pct percent of the fit, the last pct percent annealing further down."""
    if len(args) not in (2, 4):
        raise ValueError(f'use_clr_beta is (div, pct) or (div, pct, mom_hi, mom_lo), got {args!r}; '
                         'e.g. use_clr_beta=(10, 13.68, 0.95, 0.85)')
    div, pct = float(args[0]), float(args[1])
    moms = (args[2], args[3], args[2]) if len(args) == 4 else None
    return OneCycle(pct_start=(1 - pct / 100) / 2, div=div, final_div=100, moms=moms)


def _clip_text(clip: Any) -> str:
    if clip is None:
        return 'none'
    if isinstance(clip, (int, float)):
        return f'{clip:g} (all groups together)'
    return 'per group [' + ', '.join('none' if c is None else f'{c:g}' for c in clip) + ']'


class Learner(FineTuning, Predicting, Saving):
    """A model, its data and its layer groups (earliest → head), ready to train.

        learn = ConvLearner.pretrained(resnet34, data)
        learn.fit(1e-2, 3, cycle_len=1)
        learn.unfreeze()
        learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1, cycle_mult=2)

    `opt_fn` builds the optimizer (the course's SGD with momentum 0.9 unless given); `wd` is the
    weight decay of every fit that passes no `wds`. `repr(learn)` shows both.
    """

    def __init__(self, data: Any, model: nn.Module, layer_groups: Sequence[nn.Module], *,
                 opt_fn: Callable | None = None, crit: Callable | None = None,
                 metrics: Sequence[Callable] | None = None, tmp_name: str = 'tmp',
                 models_name: str = 'models', clip: float | Sequence[float | None] | None = None,
                 device: torch.device | str | None = None, channels_last: bool | None = None,
                 wd: float = 0.0, quiet: bool = False) -> None:
        self.data, self.layer_groups = data, list(layer_groups)
        self.device = process_device(device)  # under torchrun, this process's own GPU
        # channels-last runs convolutions 1.3-1.7x faster on CPUs and tensor cores alike.
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = has_conv if channels_last is None else channels_last
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        sync_module(self.model)  # several processes start from rank 0's (random) head
        self.precision = FP32
        loss, self.activation, default_metrics = task_defaults(data)
        if crit is not None and isinstance(loss, ScaledPointLoss) and not isinstance(crit, ScaledPointLoss):
            crit = ScaledPointLoss(crit, loss.size)  # e.g. L1LossFlat(), on scaled targets too
        self.crit = crit or loss
        self.metrics = list(default_metrics if metrics is None else metrics)
        self.opt_fn, self.wd = opt_fn or sgd_momentum, wd  # wd: for fits that pass no wds
        self.tmp_path = resolve_path(data.path, tmp_name)
        self.models_path = resolve_path(data.path, models_name)
        self.clip, self.quiet = clip, quiet
        self.layer_opt: LayerOptimizer | None = None
        self.sched: Recorder | None = None
        self._bn_freeze = False
        self._before_carry: Saved = []  # what unfreeze() carried, until a fit
        self._thresholds: np.ndarray | None = None

    # --- layer groups ------------------------------------------------------------------------
    def get_layer_groups(self) -> list[nn.Module]:
        """The layer groups, earliest first, head last (one learning rate each)."""
        return self.layer_groups

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups `[:n]` and train groups `[n:]` (`freeze_to(-1)`: only the head).
        Each module of a group also gets the course's flag: `m[-1].trainable` is True."""
        if not -len(self.layer_groups) <= n <= len(self.layer_groups):
            raise ValueError(f'freeze_to({n}): the model has {len(self.layer_groups)} layer groups; '
                             f'pass 0..{len(self.layer_groups)} (or -1 to train only the head)')
        n = n % len(self.layer_groups) if n < 0 else n
        was = self.trainable_groups()
        for i, g in enumerate(self.layer_groups):
            for m in g.modules():
                m.trainable = i >= n  # type: ignore[assignment]  # a plain flag (see set_trainable)
            for p in g.parameters():
                p.requires_grad_(i >= n)
        self._carry_batch_norm([i for i, (w, t) in enumerate(zip(was, self.trainable_groups())) if t and not w])

    def freeze(self) -> None:
        """Train only the last layer group (the head)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    def bn_freeze(self, b: bool) -> None:
        """Keep the body's BatchNorm layers (every layer group but the head) in eval mode, trainable
        groups included (`bn_freeze(True)`): their statistics stay the pretrained ones. The head's
        BatchNorm layers are new and keep learning theirs. The course's order, `unfreeze()` then
        `bn_freeze(True)`, puts back the statistics that `unfreeze()` carried to the data's."""
        was, self._bn_freeze = self._bn_freeze, b
        if was and not b:
            self._carry_batch_norm([i for i, t in enumerate(self.trainable_groups()[:-1]) if t])
        if b:
            self._before_carry = put_back(self._before_carry, self.layer_groups[:-1])

    def _carry_batch_norm(self, groups: Sequence[int]) -> None:
        """The BatchNorm layers of `groups` are about to leave eval mode and normalise with each
        batch's statistics: carry them to the training data's first (batch_norm.py)."""
        self._before_carry += carry_groups(self, groups)

    def body_bn_trains(self) -> bool:
        """Do the body's BatchNorm statistics move once it is unfrozen (no `bn_freeze(True)`)?"""
        return not self._bn_freeze and any(isinstance(m, BATCH_NORMS) for g in self.layer_groups[:-1]
                                           for m in g.modules())

    def trainable_groups(self) -> list[bool]:
        """Per layer group: does any of its parameters train?"""
        return [any(p.requires_grad for p in g.parameters()) for g in self.layer_groups]

    def _train_mode(self, model: nn.Module) -> None:
        """Train mode, except frozen groups stay in eval: their BatchNorm statistics and dropout
        must not move, which is also what makes a precomputed head equal the frozen model."""
        model.train()
        for g, trainable in zip(self.layer_groups, self.trainable_groups()):
            if not trainable:
                g.eval()
        if self._bn_freeze:
            for g in self.layer_groups[:-1]:
                for m in g.modules():
                    if isinstance(m, BATCH_NORMS):
                        m.eval()

    # --- training ----------------------------------------------------------------------------
    def _training_setup(self) -> tuple[nn.Module, Any, Any]:
        """The module to run and its train/valid loaders (the precompute learner overrides this)."""
        return self.model, self.data.trn_dl, self.data.val_dl

    def _fit_scope(self, model: nn.Module) -> ContextManager:
        """What training `model` needs around it (the precompute learner's head runs on one
        CPU thread)."""
        return contextlib.nullcontext()

    def _get_layer_opt(self, lrs: Any, wds: Any) -> LayerOptimizer:
        n = len(self.layer_groups)
        lrs = lr_range(lrs, n)
        wds = listify(self.wd if wds is None else wds, n, 'wds', f"np.array([{', '.join(['1e-4'] * n)}])")
        if self.layer_opt is None:
            self.layer_opt = LayerOptimizer(self.opt_fn, self.layer_groups, lrs, wds)
        else:
            self.layer_opt.set_lrs(lrs)
            self.layer_opt.set_wds(wds)
        return self.layer_opt

    def fit(self, lrs: Any, n_cycle: int, wds: Any = None, *, cycle_len: float | None = None,
            cycle_mult: float = 1, cycle_save_name: str | None = None,
            best_save_name: str | None = None, metrics: Sequence[Callable] | None = None,
            callbacks: Sequence[Any] | None = None, warm_up: bool = False,
            use_clr_beta: tuple[float, ...] | None = None, guard: bool = True,
            quiet: bool | None = None) -> list[float]:
        """Train for `n_cycle` epochs at constant rates, or with `cycle_len`, `n_cycle` SGDR
        cycles of `cycle_len * cycle_mult**i` epochs (`fit(1e-2, 3, cycle_len=1, cycle_mult=2)`
        is 1 + 2 + 4 = 7 epochs). `lrs` and `wds` are a scalar, one value per layer group
        (earliest → head) or a `slice`. Returns the last `[val_loss, *metrics]`.

        `use_clr_beta=(div, pct, mom_hi, mom_lo)` is fastai 0.7's name for one cycle over the
        whole fit (see `fit_one_cycle`). The divergence guard (`guards.DivergenceGuard`) stops a
        fit whose loss turns NaN or explodes and puts back the weights from before;
        `guard=False` turns it off.
        """
        if not isinstance(n_cycle, (int, np.integer)) or n_cycle < 1:
            raise ValueError(f'n_cycle must be a positive integer, got {n_cycle!r}; e.g. fit(1e-2, 3)')
        if cycle_len is not None and not (isinstance(cycle_len, (int, float, np.number)) and cycle_len > 0):
            raise ValueError(f'cycle_len must be > 0 epochs (or None for no cycles), got {cycle_len!r}; '
                             'e.g. fit(1e-2, 3, cycle_len=1)')
        self._check_trainable()
        layer_opt = self._get_layer_opt(lrs, wds)
        n_epochs = epochs_for(n_cycle, cycle_len, cycle_mult)
        recorder = Recorder()
        cbs: list[Any] = [recorder] + ([self._guard()] if guard else [])
        if use_clr_beta is not None:
            if cycle_len:
                raise ValueError('use_clr_beta is one cycle over the whole fit: pass n_cycle epochs '
                                 'without cycle_len, e.g. fit(1e-2, 3, use_clr_beta=(10, 13.68, 0.95, 0.85))')
            cbs.append(_clr_beta(use_clr_beta))
        if cycle_len:
            cbs.append(CosAnneal(cycle_len, cycle_mult, warm_up=warm_up))
            if cycle_save_name:
                cbs.append(CycleSaver(cycle_save_name, cycle_len, cycle_mult))
        elif cycle_save_name:
            raise ValueError('cycle_save_name needs cycle_len: e.g. fit(1e-2, 3, cycle_len=1, '
                             f"cycle_save_name={cycle_save_name!r})")
        if best_save_name:
            cbs.append(SaveBestModel(best_save_name))
        cbs += list(callbacks or [])
        self.sched = recorder
        return self._run(layer_opt, n_epochs, cbs, metrics=metrics, quiet=quiet)

    def _guard(self) -> DivergenceGuard:
        """The divergence guard, its floor the loss of a uniform guess for this data."""
        if getattr(self.data, 'is_reg', False):
            return DivergenceGuard()
        return DivergenceGuard(floor=math.log(2) if getattr(self.data, 'is_multi', False)
                               else math.log(max(int(self.data.c), 2)))

    def _check_trainable(self) -> None:
        if not any(self.trainable_groups()):
            raise ValueError(f'every one of the {len(self.layer_groups)} layer groups is frozen, so '
                             'there is nothing to train; call learn.freeze() to train the head or '
                             'learn.unfreeze() to train them all')
        check_batch_norm_batches(self)

    def _run(self, layer_opt: LayerOptimizer, n_epochs: int, callbacks: list[Any], *,
             metrics: Sequence[Callable] | None = None, quiet: bool | None = None,
             validate: bool = True, setup: tuple[nn.Module, Any, Any] | None = None,
             desc: str = 'epoch') -> list[float]:
        model, trn_dl, val_dl = setup or self._training_setup()
        self._before_carry = []  # once it trains, the carried layers are the model's own
        with self._fit_scope(model):
            return fit_loop(model, trn_dl, val_dl if validate else None, layer_opt, self.crit,
                            n_epochs, metrics=self.metrics if metrics is None else metrics,
                            callbacks=callbacks, activation=self.activation,
                            train_mode=lambda: self._train_mode(model), learn=self,
                            device=self.device, channels_last=self.channels_last, clip=self.clip,
                            quiet=self.quiet if quiet is None else quiet,
                            progress=model is self.model, desc=desc, precision=self.precision)

    def lr_find2(self, start_lr: Any = 1e-5, end_lr: float = 10, num_it: int = 100, wds: Any = None,
                 linear: bool = False, stop_dy: bool = True) -> Recorder:
        """`learn.lr_find2(); learn.sched.plot()`: the course's finder over `num_it` batches
        (however many epochs that takes) rather than one epoch; `lr_find` with `num_it`. The
        finder always stops when the loss explodes, so `stop_dy` is accepted for the course's
        calls and has no further effect."""
        return self.lr_find(start_lr, end_lr, wds, linear, num_it=num_it)

    def lr_find(self, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None, linear: bool = False,
                num_it: int | None = None) -> Recorder:
        """Raise the rate exponentially from `start_lr` to `end_lr` over one epoch (or `num_it`
        batches), stopping when the loss explodes; then put the weights, the optimizer state
        and its rates back as they were.

            learn.lr_find(); learn.sched.plot()

        With differential rates (`start_lr=np.array([1e-7, 1e-6, 1e-5])`) the last group sweeps
        to `end_lr` and the others keep their ratio to it.
        """
        self._check_trainable()
        self.sched = run_lr_finder(self, start_lr, end_lr, wds, linear, num_it)
        return self.sched

    def set_data(self, data: Any) -> None:
        """Swap in new data (progressive resizing), keep the weights, and refreeze.

            learn.set_data(get_data(299, bs)); learn.fit(1e-2, 3, cycle_len=1)
        """
        if task_kind(data) != task_kind(self.data):
            (n_old, old), (n_new, new) = task_kind(self.data), task_kind(data)
            raise ValueError(f'set_data needs data for the same outputs: the model predicts '
                             f'{n_old} ({old}), the new data has {n_new} ({new}); build a new '
                             'learner for it')
        self.data = data
        size = points_size(data)
        for f in (self.crit, self.activation):  # points: outputs scaled by the new size
            if isinstance(f, (ScaledPointLoss, PointPixels)) and size is not None:
                f.size = size
        self.freeze()

    # --- how and where it computes (precision.py, distributed.py) ------------------------------
    def to_fp16(self) -> 'Learner':
        """`learn.to_fp16()`: float16 autocast with a gradient scaler on CUDA (else float32)."""
        self.precision = mixed_precision('fp16', self.device)
        return self

    def to_bf16(self) -> 'Learner':
        """`learn.to_bf16()`: bfloat16 autocast, on CUDA or the CPU (weights stay float32)."""
        self.precision = mixed_precision('bf16', self.device)
        return self

    def to_fp32(self) -> 'Learner':
        """`learn.to_fp32()`: float32 everywhere again."""
        self.precision = FP32
        return self

    def half(self) -> 'Learner':
        """The course's `learn.half()`: `to_fp16()`."""
        return self.to_fp16()

    def distributed(self) -> 'Learner':
        """`learn = ConvLearner.pretrained(...).distributed()`: train on the processes torchrun
        started, and fail at once if there are none (under torchrun it happens anyway)."""
        init_distributed()
        return self

    # --- what it is --------------------------------------------------------------------------
    def summary(self) -> ModelSummary:
        """`learn.summary()`: a table of every layer with its output shape for one training
        image, its parameters, its layer group and whether it trains, then the parameters per
        group, trainable or frozen. Also fastai 0.7's dict: `learn.summary()['Conv2d-1']`."""
        x = torch.as_tensor(self.data.trn_ds[0][0])[None]
        return model_summary(self.model, to_device(x, self.device, self.channels_last),
                             self.layer_groups)

    def __repr__(self) -> str:
        lrs = ('[' + ', '.join(f'{lr:.3g}' for lr in self.layer_opt.lrs) + ']'
               if self.layer_opt else 'not set (no fit yet)')
        lines = [f'{type(self).__name__}: {len(self.layer_groups)} layer groups, lrs {lrs}',
                 f'  optimizer {describe_opt_fn(self.opt_fn)}, weight decay {self.wd:g} unless a fit '
                 f'passes wds',
                 f'  once unfrozen: body BatchNorm {"frozen" if self._bn_freeze else _BN_TRAINS}, '
                 f'gradient clip {_clip_text(self.clip)}']
        for i, (g, t) in enumerate(zip(self.layer_groups, self.trainable_groups())):
            n = sum(p.numel() for p in g.parameters())
            lines.append(f'  group {i}: {"trainable" if t else "frozen   "} {n:>11,} params')
        procs = describe()
        extra = [f'  trains on {procs}' if procs else None, self.precision.describe()]
        return '\n'.join(lines + [e for e in extra if e])
