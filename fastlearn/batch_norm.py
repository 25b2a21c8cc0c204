"""Unfreezing a pretrained body without a jump: its BatchNorm layers carried over to the data's
statistics, the model's function unchanged.

    learn.unfreeze()     # calls carry_to_data_stats on the groups whose BatchNorm starts training

While a group is frozen its BatchNorm layers run in eval mode and normalise with the statistics
they were pretrained with (ImageNet's). Once it trains (without `learn.bn_freeze(True)`), train
mode normalises with each batch's statistics instead, the body's features jump at the first
unfrozen batch, and the head trained on the old ones no longer fits them. On the dogs-and-cats
photos an epoch with every rate at 0 lost 12 points that way (docs/recipe.md); on the demo's
digits the first two unfrozen epochs fell from the head's 91.4 % to 89.4 and 88.6 % at five times the
head's rate (bench/digits_batchnorm.py, variant uncarried_5x).

The layer computes `w * (x - mean) / std + b`. With the data's statistics `mean'`, `std'` measured
at that layer, `w' = w * std' / std` and `b' = b + w * (mean' - mean) / std` give the same output
normalising with `mean'`, `std'`: exactly so in eval mode, and in train mode as nearly as a batch's
statistics are the data's. So the model predicts what it did, and training starts from there.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import sum_over_ranks
from .guards import BATCH_NORMS
from .model import forward, to_device

__all__ = ['carry_to_data_stats', 'batch_norm_layers', 'carry_groups', 'put_back', 'CARRY_BATCHES']

# Training batches measured per carry. 16 batches of 32 images put a channel's mean within about
# 1/sqrt(512) ~ 4 % of its spread (more samples than that: every position of every map counts).
# The pass is a forward in eval mode over those images only: on dogscats, a third of the images
# the precompute cache runs through once.
CARRY_BATCHES = 16


def batch_norm_layers(modules: Iterable[nn.Module]) -> list[_BatchNorm]:
    """The BatchNorm layers in `modules` that keep running statistics and an affine transform:
    the ones whose statistics can be carried without changing the model's function."""
    return [m for g in modules for m in g.modules() if isinstance(m, BATCH_NORMS)
            and m.track_running_stats and m.affine]


def _input_moments(model: nn.Module, norms: Sequence[_BatchNorm], batches: Iterable[Any], *,
                   device: torch.device, channels_last: bool, max_batches: int) -> list[np.ndarray]:
    """Per layer, the per-channel count, sum and sum of squares of what it receives, in float64,
    with the model in eval mode: the inputs it will see once its statistics move."""
    # on the batches' device, so that no batch waits for a copy to the host
    sums = [torch.zeros(2, m.num_features, dtype=torch.float64, device=device) for m in norms]
    counts = [0] * len(norms)

    def record(i: int):
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double().transpose(0, 1).reshape(args[0].shape[1], -1)
            sums[i] += torch.stack([x.sum(1), (x * x).sum(1)])
            counts[i] += x.shape[1]
        return hook

    handles = [m.register_forward_pre_hook(record(i)) for i, m in enumerate(norms)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if i >= max_batches:
                    break
                forward(model, to_device(batch[0], device, channels_last))  # (x, y), as fit takes them
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rows = [torch.cat([torch.full((1, m.num_features), float(n), dtype=torch.float64), t.cpu()])
            for m, n, t in zip(norms, counts, sums)]
    pooled = sum_over_ranks(torch.cat(rows, 1).numpy())  # one collective for every layer
    return np.split(pooled, np.cumsum([m.num_features for m in norms])[:-1], axis=1)


def carry_to_data_stats(model: nn.Module, norms: Sequence[_BatchNorm], batches: Iterable[Any], *,
                        device: torch.device | str = 'cpu', channels_last: bool = False,
                        max_batches: int = CARRY_BATCHES) -> int:
    """Re-express each BatchNorm layer of `norms` (inside `model`) at the statistics of the data
    in `batches` (`(x, y)` batches, as a training loader yields them), keeping what `model`
    computes; returns how many layers moved. Under `torchrun` every process measures its own
    batches and all of them take the pooled statistics, so the copies stay equal."""
    if not norms:
        return 0
    moments = _input_moments(model, norms, batches, device=torch.device(device),
                             channels_last=channels_last, max_batches=max_batches)
    if moments[0][0, 0] == 0:
        raise ValueError('carry_to_data_stats got no batches: the training loader is empty; '
                         'give the data at least one training image')
    with torch.no_grad():
        for m, (n, s, ss) in zip(norms, moments):
            mean, var = s / n, np.maximum(ss / n - (s / n) ** 2, 0.0)  # train mode's (biased) variance
            _re_express(m, torch.from_numpy(mean), torch.from_numpy(var))
    return len(norms)


Saved = list[tuple[_BatchNorm, dict[str, torch.Tensor]]]


def carry_groups(learn: Any, groups: Sequence[int]) -> Saved:
    """What `learn.unfreeze()` runs for the layer groups it makes trainable: their BatchNorm layers
    whose statistics will train (the head's, and the body's unless `learn.bn_freeze(True)`)
    carried to the statistics of up to `CARRY_BATCHES` training batches. Draws nothing from
    torch's generator. Returns each carried layer with its state before, for `put_back`."""
    last = len(learn.layer_groups) - 1
    norms = batch_norm_layers(learn.layer_groups[i] for i in groups if i == last or not learn._bn_freeze)
    dl = getattr(learn.data, 'trn_dl', None)
    if not norms or dl is None or len(dl) == 0:
        return []
    before = [(m, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    with torch.random.fork_rng(devices=[learn.device] if learn.device.type == 'cuda' else []):
        carry_to_data_stats(learn.model, norms, dl, device=learn.device, channels_last=learn.channels_last)
    return before


def put_back(saved: Saved, modules: Iterable[nn.Module]) -> Saved:
    """The layers of `saved` inside `modules` as they were before `carry_groups`; returns the rest.
    For the course's `learn.unfreeze(); learn.bn_freeze(True)`: frozen statistics are the
    pretrained ones, whichever of the two calls comes first."""
    inside = {id(m) for g in modules for m in g.modules()}
    for m, state in saved:
        if id(m) in inside:
            m.load_state_dict(state)
    return [(m, s) for m, s in saved if id(m) not in inside]


def _re_express(m: _BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
    """`m` normalising with `mean`, `var` (float64), its affine transform changed to compensate."""
    assert m.running_mean is not None and m.running_var is not None  # batch_norm_layers' choice
    std_old = (m.running_var.double().cpu() + m.eps).sqrt()
    shift = m.weight.double().cpu() * (mean - m.running_mean.double().cpu()) / std_old
    m.bias.add_(shift.to(m.bias))
    m.weight.mul_(((var + m.eps).sqrt() / std_old).to(m.weight))
    m.running_mean.copy_(mean.to(m.running_mean))
    m.running_var.copy_(var.to(m.running_var))
