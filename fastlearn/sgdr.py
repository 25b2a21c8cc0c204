"""The callbacks of fastai 0.7's sgdr module, thin objects that apply the pure schedules of
`schedules.py` to a `LayerOptimizer`: SGDR (`CosAnneal`), the lr finder, the recorder behind
`learn.sched`, and the best-model and per-cycle snapshot savers. The schedule functions are
re-exported, so `from fastlearn.sgdr import *` gives what the course's did.

The loop drives every callback with its state (see docs/architecture.md):

    on_train_begin(state)
      on_epoch_begin(state)
        on_batch_begin(state)          # schedules set the lrs here
        ... forward, backward, step ...
        on_batch_end(state, loss)      # after state.smooth_loss is updated
      on_epoch_end(state, metrics)     # metrics = [val_loss, *metric values]
    on_train_end(state)

`state` carries `layer_opt`, `n_batches`, `n_epochs`, `epoch`, `iteration`, `stop`,
`smooth_loss` and `learn`; a callback stops training by setting `state.stop = True`.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from .core import subplots, sum_geom
from .layer_optimizer import lr_range
from .schedules import (check_cycles, cos_anneal, cycle_boundaries, cycle_index, exp_lr,
                        finite_prefix, lin_lr, sgdr_multiplier, suggest_lr, trim)

__all__ = ['Callback', 'cos_anneal', 'sgdr_multiplier', 'cycle_index', 'cycle_boundaries',
           'exp_lr', 'lin_lr', 'suggest_lr', 'CosAnneal', 'LR_Finder', 'Recorder',
           'SaveBestModel', 'CycleSaver']


class Callback:
    """Base class: every hook is a no-op, so a callback overrides only what it needs.
    Hooks return nothing; to stop training, set `state.stop = True`."""

    def on_train_begin(self, state: Any) -> None:
        """Once per fit, after the loop has set the lrs it was asked for."""

    def on_epoch_begin(self, state: Any) -> None:
        """Before each epoch's first batch; `state.epoch` is 0-based."""

    def on_batch_begin(self, state: Any) -> None:
        """Before each batch's forward pass: the place to set lrs for `state.iteration`."""

    def on_batch_end(self, state: Any, loss: float) -> None:
        """After the optimizer step; `loss` is this batch's, `state.smooth_loss` the EMA."""

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        """After validation; `metrics` is `[val_loss, *metric values]`."""

    def on_train_end(self, state: Any) -> None:
        """Once per fit, also after a stop."""


# --------------------------------------------------------------------------- callbacks

class CosAnneal(Callback):
    """SGDR, fastai 0.7's `fit(lrs, n_cycle, cycle_len=, cycle_mult=)`: each group's lr is
    its base lr (the group's lr when training begins) × `sgdr_multiplier` at every batch.

    Storing the base lr of every group, not one scalar, is what keeps differential rates
    (1e-4 : 1e-3 : 1e-2) in the same ratio through every restart. The lrs are left where
    the schedule ends; the loop sets fresh lrs before each fit.
    """

    def __init__(self, cycle_len: float, cycle_mult: float = 1, *, warm_up: bool = False) -> None:
        check_cycles(1, cycle_len, cycle_mult)
        self.cycle_len, self.cycle_mult, self.warm_up = cycle_len, cycle_mult, warm_up
        self.base_lrs: np.ndarray | None = None
        self.start_iteration = 0

    def on_train_begin(self, state: Any) -> None:
        self.base_lrs = np.array(state.layer_opt.lrs, dtype=float)
        self.start_iteration = state.iteration

    def on_batch_begin(self, state: Any) -> None:
        if self.base_lrs is None:  # driven without on_train_begin: start here
            self.on_train_begin(state)
        assert self.base_lrs is not None  # on_train_begin set it
        m = sgdr_multiplier(state.iteration - self.start_iteration, state.n_batches,
                            self.cycle_len, self.cycle_mult, warm_up=self.warm_up)
        state.layer_opt.set_lrs(self.base_lrs * m)

    def __repr__(self) -> str:
        return (f"CosAnneal(cycle_len={self.cycle_len}, cycle_mult={self.cycle_mult}, "
                f"warm_up={self.warm_up})")


class LR_Finder(Callback):
    """The lr range test: the last group's lr sweeps from `start_lr` to `end_lr` over
    `n_iter` iterations (default: the whole run the loop was given, one epoch in
    fastai 0.7), exponentially (`exp_lr`) or with `linear=True` linearly (`lin_lr`); the
    other groups keep their ratio to the last group at train begin.

    It stops the loop (`state.stop = True`) after `n_iter` batches, when the smoothed loss is
    NaN/inf, or when it exceeds 4× the best smoothed loss seen after the first 10 iterations
    (the smoothed loss is noisy before that). Recording is the `Recorder`'s job.
    """

    grace = 10
    stop_factor = 4.0

    def __init__(self, start_lr: float = 1e-5, end_lr: float = 10, n_iter: int | None = None, *,
                 linear: bool = False, stop_div: bool = True) -> None:
        low_ok = start_lr >= 0 if linear else start_lr > 0  # an exponential sweep can't start at 0
        if not (low_ok and start_lr < end_lr):
            raise ValueError(f"need 0 < start_lr < end_lr (0 <= start_lr with linear=True), "
                             f"got start_lr={start_lr}, end_lr={end_lr}")
        if n_iter is not None and n_iter < 1:
            raise ValueError(f"n_iter must be >= 1 (or None for the whole run), got {n_iter}")
        self.start_lr, self.end_lr, self.n_iter = start_lr, end_lr, n_iter
        self.linear, self.stop_div = linear, stop_div
        self._reset()

    def _reset(self) -> None:
        self.ratios: np.ndarray | None = None
        self.total = self.n_iter
        self.start_iteration = 0
        self.n_seen = 0
        self.best = math.inf

    def on_train_begin(self, state: Any) -> None:
        self._reset()
        lrs = np.array(state.layer_opt.lrs, dtype=float)
        self.ratios = lrs / lrs[-1] if lrs[-1] > 0 else np.ones_like(lrs)
        self.total = self.n_iter or state.n_batches * state.n_epochs
        self.start_iteration = state.iteration

    def lr_at(self, i: int) -> float:
        """The last group's lr at the finder's i-th iteration."""
        f = lin_lr if self.linear else exp_lr
        if self.total is None:  # the same TypeError as before, saying why
            raise TypeError('LR_Finder.lr_at: the sweep has no length before on_train_begin (or n_iter)')
        return f(i, self.total, self.start_lr, self.end_lr)

    def on_batch_begin(self, state: Any) -> None:
        if self.ratios is None:
            self.on_train_begin(state)
        assert self.ratios is not None  # on_train_begin set it
        state.layer_opt.set_lrs(self.ratios * self.lr_at(state.iteration - self.start_iteration))

    def on_batch_end(self, state: Any, loss: float) -> None:
        smooth = getattr(state, 'smooth_loss', None)
        smooth = float(loss if smooth is None else smooth)
        i, self.n_seen = self.n_seen, self.n_seen + 1
        if self.n_iter is not None and self.n_seen >= self.n_iter:
            state.stop = True  # a fixed-length sweep shorter than the run the loop was given
        if not math.isfinite(smooth):
            state.stop = state.stop or self.stop_div
            return
        # a negative best (an unusual loss) would make "4x best" meaningless: only compare > 0
        if self.stop_div and 0 < self.best and smooth > self.stop_factor * self.best:
            state.stop = True
        if i >= self.grace and smooth < self.best:
            self.best = smooth

    def __repr__(self) -> str:
        kind = 'linear' if self.linear else 'exponential'
        return f"LR_Finder({self.start_lr:g} -> {self.end_lr:g}, {kind}, n_iter={self.n_iter})"


class Recorder(Callback):
    """What `learn.sched` is after a fit: per iteration the last group's lr (`lrs`), every
    group's lrs (`group_lrs`), the smoothed loss (`losses`), the raw batch loss
    (`raw_losses`) and the loop's `iterations`; per epoch `epoch_metrics`
    ([val_loss, *metrics]). Each fit starts a fresh record."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.lrs: list[float] = []
        self.group_lrs: list[list[float]] = []
        self.losses: list[float] = []
        self.raw_losses: list[float] = []
        self.iterations: list[int] = []
        self.epoch_metrics: list[list[float]] = []

    def on_train_begin(self, state: Any) -> None:
        self._reset()

    def on_batch_end(self, state: Any, loss: float) -> None:
        lrs = [float(x) for x in state.layer_opt.lrs]  # still the lrs this batch used
        smooth = getattr(state, 'smooth_loss', None)
        self.lrs.append(lrs[-1])
        self.group_lrs.append(lrs)
        self.losses.append(float(loss if smooth is None else smooth))
        self.raw_losses.append(float(loss))
        self.iterations.append(int(getattr(state, 'iteration', len(self.iterations))))

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        self.epoch_metrics.append([float(m) for m in metrics])

    def suggest_lr(self) -> float:
        """See `suggest_lr`: the middle of the longest descent, else lr at the minimum / 10."""
        return suggest_lr(self.lrs, self.losses)

    # -- plots: matplotlib is imported here so `import fastlearn` stays quick

    @staticmethod
    def _axes(ax: Any = None) -> tuple[Any, Any]:
        if ax is not None:
            return ax.figure, ax
        return subplots(figsize=(6, 4))

    def plot(self, n_skip: int = 10, n_skip_end: int = 5, *, suggestion: bool = False,
             ax: Any = None) -> Any:
        """learn.sched.plot(): smoothed loss against lr (log scale) after an lr finder run,
        without the first `n_skip` and the last `n_skip_end` points (0 keeps them all;
        with few points the skips shrink so the plot is never empty). Losses from the first
        NaN/inf on are dropped. `suggestion=True` marks `suggest_lr()`."""
        x, y = finite_prefix(self.lrs, self.losses)
        lo, hi = trim(len(y), n_skip, n_skip_end)
        fig, ax = self._axes(ax)
        ax.plot(x[lo:hi], y[lo:hi])
        ax.set_xscale('log')
        ax.set_xlabel('learning rate (log scale)')
        ax.set_ylabel('loss (smoothed)')
        if suggestion and len(self.losses):
            lr = self.suggest_lr()
            ax.axvline(lr, color='tab:red', linestyle='--', label=f'suggested lr {lr:.2g}')
            ax.legend()
        return fig

    def plot_lr(self, *, ax: Any = None) -> Any:
        """learn.sched.plot_lr(): each group's lr against the iteration."""
        fig, ax = self._axes(ax)
        g = np.array(self.group_lrs, dtype=float) if self.group_lrs else np.zeros((0, 1))
        for k in range(g.shape[1]):
            ax.plot(self.iterations, g[:, k], label=f'group {k}')
        if g.shape[1] > 1:
            ax.set_yscale('log')
            ax.legend()
        ax.set_xlabel('iteration')
        ax.set_ylabel('learning rate')
        return fig

    def plot_loss(self, n_skip: int = 10, n_skip_end: int = 5, *, ax: Any = None) -> Any:
        """learn.sched.plot_loss(): smoothed training loss against the iteration, skipping
        as `plot` does (NaN/inf points leave gaps)."""
        lo, hi = trim(len(self.losses), n_skip, n_skip_end)
        y = np.asarray(self.losses, dtype=float)
        y = np.where(np.isfinite(y), y, np.nan)
        fig, ax = self._axes(ax)
        ax.plot(self.iterations[lo:hi], y[lo:hi])
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss (smoothed)')
        return fig

    def __repr__(self) -> str:
        if not self.losses:
            return 'Recorder(empty)'
        return (f"Recorder({len(self.losses)} iterations, {len(self.epoch_metrics)} epochs, "
                f"last lr={self.lrs[-1]:.3g}, last loss={self.losses[-1]:.4g})")


class SaveBestModel(Callback):
    """fastai 0.7's `best_save_name`: `state.learn.save(name)` at each epoch end where the
    model improves. The score is the first metric after val_loss, higher is better
    (accuracy); with no metrics, val_loss, lower is better. A tie on the metric is broken by
    a lower val_loss. `mode='min'` is for a first metric where lower is better (error_rate).
    """

    def __init__(self, name: str, *, mode: str = 'auto') -> None:
        if mode not in ('auto', 'max', 'min'):
            raise ValueError(f"mode must be 'auto', 'max' or 'min', got {mode!r}")
        self.name, self.mode = name, mode
        self.best: tuple[float, float] | None = None

    def on_train_begin(self, state: Any) -> None:
        self.best = None

    def _key(self, metrics: list[float]) -> tuple[float, float]:
        """A pair where larger is better: (score, -val_loss)."""
        val_loss = float(metrics[0])
        if len(metrics) == 1:
            return -val_loss, -val_loss
        score = float(metrics[1])
        return (-score if self.mode == 'min' else score), -val_loss

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        if not len(metrics):
            return
        key = self._key(list(metrics))
        if not all(math.isfinite(k) for k in key):
            return
        if self.best is None or key > self.best:
            self.best = key
            state.learn.save(self.name)

    def __repr__(self) -> str:
        return f"SaveBestModel({self.name!r}, mode={self.mode!r})"


class CycleSaver(Callback):
    """fastai 0.7's `cycle_save_name`: saves `f'{name}_cyc_{i}'` at the epoch end that
    closes SGDR cycle i (cycle i spans `cycle_len * cycle_mult**i` epochs), for snapshot
    ensembles. Epochs are counted from this callback's `on_train_begin`; a cycle that ends
    mid-epoch (a fractional `cycle_len`) has no epoch end of its own and is not saved."""

    def __init__(self, name: str, cycle_len: float, cycle_mult: float = 1) -> None:
        check_cycles(1, cycle_len, cycle_mult)
        self.name, self.cycle_len, self.cycle_mult = name, cycle_len, cycle_mult
        self.epochs_done = 0
        self.saved: list[str] = []

    def on_train_begin(self, state: Any) -> None:
        self.epochs_done, self.saved = 0, []

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        self.epochs_done += 1
        # the nudge keeps a float sum that lands a hair above an integer epoch on its cycle
        i = cycle_index(self.epochs_done + 1e-9, self.cycle_len, self.cycle_mult) - 1
        if i >= 0 and math.isclose(self.cycle_len * sum_geom(1, self.cycle_mult, i + 1),
                                   self.epochs_done, rel_tol=1e-9, abs_tol=1e-9):
            name = f'{self.name}_cyc_{i}'
            state.learn.save(name)
            self.saved.append(name)

    def __repr__(self) -> str:
        return (f"CycleSaver({self.name!r}, cycle_len={self.cycle_len}, "
                f"cycle_mult={self.cycle_mult})")


def run_lr_finder(learn: Any, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None,
                  linear: bool = False, num_it: int | None = None) -> Recorder:
    """What `learn.lr_find()` does: sweep the rate with an `LR_Finder` over one epoch (or
    `num_it` batches) with a `Recorder` beside it, then put the weights, the optimizer state
    and its rates back as they were. Returns the recorder (`learn.sched`)."""
    finder = LR_Finder(start_lr=float(lr_range(start_lr, len(learn.layer_groups))[-1]),
                       end_lr=end_lr, n_iter=num_it, linear=linear)
    setup = learn._training_setup()
    model, n_batches = setup[0], len(setup[1])
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(learn.layer_opt.state_dict()) if learn.layer_opt else None
    recorder = Recorder()
    try:
        layer_opt = learn._get_layer_opt(start_lr, wds)
        learn._run(layer_opt, math.ceil((num_it or n_batches) / n_batches), [recorder, finder],
                   validate=False, setup=setup, desc='lr_find')
    finally:
        model.load_state_dict(model_state)
        if opt_state is None:  # the next fit starts from a fresh optimizer, as it would have
            learn.layer_opt = None
        else:
            assert learn.layer_opt is not None  # opt_state came from one
            learn.layer_opt.load_state_dict(opt_state)
    return recorder
