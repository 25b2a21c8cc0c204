"""The one-cycle policy (Smith 2018; fastai 2's `fit_one_cycle`): the rate warms up from
`max_lr/div` to `max_lr` with a half cosine, then anneals to `max_lr/(div*final_div)`, while SGD's
momentum moves the other way (0.95 -> 0.85 -> 0.95). A pure function of the position and a thin
callback, as SGDR in `sgdr.py`.

    learn.fit_one_cycle(5, 1e-2)                 # also an array or slice(1e-4, 1e-2) per group
    learn.sched.plot_lr()
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .sgdr import Callback

__all__ = ['one_cycle', 'OneCycle', 'set_momentum']


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def one_cycle(pct: float, *, pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e4,
              moms: tuple[float, float, float] = (0.95, 0.85, 0.95)) -> tuple[float, float]:
    """`(lr multiplier, momentum)` at `pct` in [0, 1] of the run: the multiplier rises from
    `1/div` to 1 over the first `pct_start` of it and falls to `1/(div*final_div)` by its end;
    momentum goes `moms[0] -> moms[1]` while the rate rises and `moms[1] -> moms[2]` after."""
    if not 0 <= pct_start <= 1:
        raise ValueError(f'pct_start must be in [0, 1], got {pct_start!r}; e.g. pct_start=0.25')
    if not (div >= 1 and final_div >= 1):
        raise ValueError(f'div and final_div must be >= 1, got div={div!r}, final_div={final_div!r}')
    pct = min(max(pct, 0.0), 1.0)
    if pct < pct_start:
        t = pct / pct_start
        return _cos(1 / div, 1.0, t), _cos(moms[0], moms[1], t)
    t = (pct - pct_start) / (1 - pct_start) if pct_start < 1 else 1.0
    return _cos(1.0, 1 / (div * final_div), t), _cos(moms[1], moms[2], t)


def set_momentum(opt: Any, mom: float) -> None:
    """Set SGD's `momentum` or Adam's first beta in every parameter group."""
    for g in opt.param_groups:
        if 'betas' in g:
            g['betas'] = (mom, *g['betas'][1:])
        elif 'momentum' in g:
            g['momentum'] = mom


class OneCycle(Callback):
    """Applies `one_cycle` over the whole fit: each group's lr is its max lr (the group's lr when
    training begins) times the multiplier, so differential rates keep their ratios. The momentum is
    put back as it was when the fit ends."""

    def __init__(self, *, pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e4,
                 moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95)) -> None:
        one_cycle(0, pct_start=pct_start, div=div, final_div=final_div)  # validates the settings
        self.pct_start, self.div, self.final_div, self.moms = pct_start, div, final_div, moms
        self.max_lrs: np.ndarray | None = None

    def on_train_begin(self, state: Any) -> None:
        self.max_lrs = np.array(state.layer_opt.lrs, dtype=float)
        self.start, self.total = state.iteration, state.n_batches * state.n_epochs
        opt = state.layer_opt.opt
        self._saved = [(g.get('momentum'), g.get('betas')) for g in opt.param_groups]

    def on_batch_begin(self, state: Any) -> None:
        pct = (state.iteration - self.start) / max(self.total, 1)
        mult, mom = one_cycle(pct, pct_start=self.pct_start, div=self.div, final_div=self.final_div,
                              moms=self.moms or (0, 0, 0))
        assert self.max_lrs is not None, 'OneCycle.on_batch_begin before on_train_begin'
        state.layer_opt.set_lrs(self.max_lrs * mult)
        if self.moms is not None:
            set_momentum(state.layer_opt.opt, mom)

    def on_train_end(self, state: Any) -> None:
        for g, (momentum, betas) in zip(state.layer_opt.opt.param_groups, self._saved):
            if momentum is not None:
                g['momentum'] = momentum
            if betas is not None:
                g['betas'] = betas

    def __repr__(self) -> str:
        return (f'OneCycle(pct_start={self.pct_start:g}, div={self.div:g}, '
                f'final_div={self.final_div:g}, moms={self.moms})')
