"""One optimizer parameter group per layer group, and the rule that spreads learning rates
over those groups.

    lrs = np.array([1e-4, 1e-3, 1e-2])              # earliest group -> head
    layer_opt = LayerOptimizer(sgd_momentum, learn.get_layer_groups(), lrs, wds=1e-4)
    layer_opt.set_lrs(slice(1e-4, 1e-2))            # geometric spread, as fastai 2 does
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import listify

__all__ = ['LayerOptimizer', 'lr_range', 'sgd_momentum', 'lrs_example', 'describe_opt_fn']

OptFn = Callable[..., torch.optim.Optimizer]


def describe_opt_fn(opt_fn: Callable) -> str:
    """`'AdamW(betas=(0.9, 0.99))'` for a `partial`, `'sgd_momentum()'` for a function."""
    f, kw = getattr(opt_fn, 'func', opt_fn), getattr(opt_fn, 'keywords', {})
    args = ', '.join(f'{k}={v}' for k, v in kw.items())
    return f'{getattr(f, "__name__", type(f).__name__)}({args})'


def sgd_momentum(params: Any, lr: float = 1e-3, momentum: float = 0.9, **kwargs: Any
                 ) -> torch.optim.Optimizer:
    """The course's default optimizer: SGD with momentum 0.9."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, **kwargs)


def lrs_example(n_groups: int) -> str:
    """A 10x-per-group lrs array for `n_groups` groups, for error messages:
    `np.array([1e-4, 1e-3, 1e-2])` for three."""
    if n_groups > 5:
        return 'slice(1e-5, 1e-2)'
    return 'np.array([' + ', '.join(f'1e-{k}' for k in range(n_groups + 1, 1, -1)) + '])'


def _check_rates(values: Iterable[float], name: str) -> None:
    for v in values:
        is_number = isinstance(v, (int, float, np.floating, np.integer))
        if not (is_number and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite numbers >= 0, got {v!r}")


def lr_range(lrs: Any, n_groups: int) -> np.ndarray:
    """One learning rate per layer group (earliest group first, head last).

    - a scalar (or a one-element list) is used for every group;
    - an array or list must have one value per group;
    - `slice(lo, hi)` spreads lo..hi geometrically over the groups (fastai 2);
    - `slice(hi)` gives hi to the last group and hi/10 to the others (fastai 2's rule; the
      fastai 1 docs said hi/3, the code has always used hi/10).
    With one group a slice gives its upper end.

    >>> lr_range(slice(1e-4, 1e-2), 3)
    array([0.0001, 0.001 , 0.01  ])
    """
    if not isinstance(n_groups, (int, np.integer)) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer, got {n_groups!r}")
    if isinstance(lrs, slice):
        return _slice_range(lrs, int(n_groups))
    out = np.array(listify(lrs, int(n_groups), 'lrs', lrs_example(n_groups)), dtype=float)
    _check_rates(out, 'lrs')
    return out


def _slice_range(s: slice, n: int) -> np.ndarray:
    lo, hi = s.start, s.stop
    if hi is None or s.step is not None:
        raise ValueError(f"lrs as a slice must be slice(hi) or slice(lo, hi), got {s!r}; "
                         f"e.g. slice(1e-4, 1e-2)")
    _check_rates([hi] if lo is None else [lo, hi], 'lrs')
    if n == 1:
        return np.array([float(hi)])
    if lo is None:
        return np.array([hi / 10] * (n - 1) + [hi], dtype=float)
    if not 0 < lo <= hi:
        raise ValueError(f"lrs as slice(lo, hi) needs 0 < lo <= hi, got {s!r}; "
                         f"e.g. slice(1e-4, 1e-2)")
    return np.geomspace(lo, hi, n)


def _group_params(group: Any) -> list[torch.Tensor]:
    """The parameters of one layer group (a module, or a list of modules and tensors), each
    once, in order."""
    items = [group] if isinstance(group, (nn.Module, torch.Tensor)) else list(group)
    params: list[torch.Tensor] = []
    for item in items:
        if isinstance(item, nn.Module):
            params.extend(item.parameters())
        elif isinstance(item, torch.Tensor):
            params.append(item)
        else:
            raise TypeError(f"a layer group holds modules or parameters, got {type(item).__name__}")
    return list({id(p): p for p in params}.values())  # each parameter once, in first-seen order


def _decoupled_decay(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: AdamW-style decay p <- p * (1 - lr * wd), before the update and
    outside the gradient, for groups that carry `decoupled_wd`."""
    with torch.no_grad():
        for g in opt.param_groups:
            wd = g.get('decoupled_wd', 0)
            if wd:
                for p in g['params']:
                    if p.grad is not None:
                        p.mul_(1 - g['lr'] * wd)


class LayerOptimizer:
    """A torch optimizer with one parameter group per layer group, built once, frozen groups
    included (torch skips parameters whose `.grad` is None), so freezing and unfreezing
    never rebuild it and the momentum of trained groups survives.

        lrs = np.array([1e-4, 1e-3, 1e-2])
        layer_opt = LayerOptimizer(sgd_momentum, layer_groups, lrs, wds=1e-4)

    `opt_fn(param_groups)` builds the optimizer (e.g. `sgd_momentum`, `torch.optim.Adam`,
    `functools.partial(torch.optim.SGD, momentum=0.9, nesterov=True)`).
    Weight decay is coupled L2 through the optimizer's `weight_decay` (fastai 0.7) unless
    `decoupled=True`: then the optimizer sees `weight_decay=0` and each step first shrinks
    the weights by `lr * wd` (AdamW's rule, for any optimizer). Passing `torch.optim.AdamW`
    with the default `decoupled=False` gets the same through AdamW itself.
    The per-group lrs and wds live in the torch optimizer's parameter groups, so
    `state_dict()` / `load_state_dict()` snapshot and restore them with the momentum.
    """

    def __init__(self, opt_fn: OptFn | None, layer_groups: Any, lrs: Any, wds: Any = None, *,
                 decoupled: bool = False) -> None:
        if isinstance(layer_groups, nn.Module):
            layer_groups = [layer_groups]
        self.layer_groups = list(layer_groups)
        if not self.layer_groups:
            raise ValueError("layer_groups is empty; pass at least one group (a module or a "
                             "list of parameters)")
        self.opt_fn = opt_fn or sgd_momentum
        self.decoupled = decoupled
        n = len(self.layer_groups)
        groups = [{'params': _group_params(g), 'lr': lr}
                  for g, lr in zip(self.layer_groups, lr_range(lrs, n))]
        if not any(g['params'] for g in groups):
            raise ValueError("the layer groups hold no parameters")
        self.opt = self.opt_fn(groups)
        self.set_wds(wds)
        if decoupled:
            self.opt.register_step_pre_hook(_decoupled_decay)

    @property
    def n_groups(self) -> int:
        return len(self.opt.param_groups)

    @property
    def lrs(self) -> list[float]:
        """Current learning rate of each group, earliest first."""
        return [float(g['lr']) for g in self.opt.param_groups]

    @property
    def wds(self) -> list[float]:
        """Current weight decay of each group, earliest first."""
        key = 'decoupled_wd' if self.decoupled else 'weight_decay'
        return [float(g.get(key, 0)) for g in self.opt.param_groups]

    def set_lrs(self, lrs: Any) -> None:
        """A scalar, one value per group, or a `slice` (see `lr_range`)."""
        for g, lr in zip(self.opt.param_groups, lr_range(lrs, self.n_groups)):
            g['lr'] = float(lr)

    def set_wds(self, wds: Any) -> None:
        """A scalar or one value per group; None means 0."""
        n = self.n_groups
        example = '[' + ', '.join(['1e-4'] * n) + ']'
        values = listify(0.0 if wds is None else wds, n, 'wds', example)
        _check_rates(values, 'wds')
        for g, wd in zip(self.opt.param_groups, values):
            if self.decoupled:
                g['decoupled_wd'], g['weight_decay'] = float(wd), 0.0
            else:
                g['weight_decay'] = float(wd)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.opt.step()

    def state_dict(self) -> dict:
        """The torch optimizer's state: momentum buffers plus each group's lr and wd."""
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)

    def __repr__(self) -> str:
        fmt = lambda xs: '[' + ', '.join(f'{x:.3g}' for x in xs) + ']'  # noqa: E731
        wd_kind = 'decoupled' if self.decoupled else 'L2'
        return (f"LayerOptimizer({type(self.opt).__name__}, {self.n_groups} groups, "
                f"lrs={fmt(self.lrs)}, wds={fmt(self.wds)} ({wd_kind}))")
