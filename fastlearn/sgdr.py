"""Learning-rate schedules as pure functions of the step, and the thin callbacks that apply
them to a `LayerOptimizer`: SGDR (`CosAnneal`), the lr finder, the recorder behind
`learn.sched`, and the best-model and per-cycle snapshot savers.

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

import math
from bisect import bisect_left
from typing import Any

import numpy as np

from .core import subplots, sum_geom

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


# --------------------------------------------------------------------------- pure schedules

def cos_anneal(t: float, T: float) -> float:
    """½(1 + cos(π t/T)): 1 at t=0, 0.5 at t=T/2, 0 at t=T."""
    return 0.5 * (1 + math.cos(math.pi * t / T))


def _check_cycles(n_batches: int, cycle_len: float, cycle_mult: float) -> None:
    if not (isinstance(n_batches, (int, np.integer)) and n_batches >= 1):
        raise ValueError(f"n_batches (batches per epoch) must be an integer >= 1, "
                         f"got {n_batches!r}")
    if not (isinstance(cycle_len, (int, float, np.number)) and cycle_len > 0):
        raise ValueError(f"cycle_len must be > 0 epochs, got {cycle_len!r}; e.g. cycle_len=1")
    if not (isinstance(cycle_mult, (int, float, np.number)) and cycle_mult >= 1):
        raise ValueError(f"cycle_mult must be >= 1 (1 keeps cycles equal, 2 doubles them), "
                         f"got {cycle_mult!r}")


def cycle_index(position: float, cycle_len: float, cycle_mult: float = 1) -> int:
    """The 0-based cycle holding `position` when the first cycle lasts `cycle_len` and each
    next one `cycle_mult` times longer (positions and lengths in epochs, or iterations).
    Closed form: cycle i covers [cycle_len·sum_geom(1, m, i), cycle_len·sum_geom(1, m, i+1))."""
    u = position / cycle_len
    if cycle_mult == 1:
        i = int(u)
    else:  # invert the geometric sum (m^i - 1)/(m - 1) = u
        i = int(math.log1p(u * (cycle_mult - 1)) / math.log(cycle_mult))
    # the logarithm can land one off at an exact boundary: settle it with the sums themselves
    start = lambda k: cycle_len * sum_geom(1, cycle_mult, k)  # noqa: E731
    while i > 0 and start(i) > position:
        i -= 1
    while start(i + 1) <= position:
        i += 1
    return i


def sgdr_multiplier(iteration: int, n_batches: int, cycle_len: float = 1, cycle_mult: float = 1,
                    n_cycle: int | None = None, warm_up: bool = False) -> float:
    """SGDR's lr multiplier in [0, 1] for a 0-based `iteration`.

    Cycle i lasts `n_batches * cycle_len * cycle_mult**i` iterations; within it the
    multiplier is `cos_anneal(t, cycle_length)` with t the iterations since the cycle began,
    so it starts every cycle at exactly 1 (a restart) and ends just above 0.
    `n_cycle` (optional) makes an iteration past the last cycle an error rather than a
    silent extra restart.

    `warm_up=True` reproduces fastai 0.7: during the first 5% of the *first* cycle the
    multiplier is 1/100, then the cosine resumes where it would have been. It is off by
    default because 0.7 applied it silently: users asked for `lr` and trained at lr/100.
    """
    _check_cycles(n_batches, cycle_len, cycle_mult)
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    first = n_batches * cycle_len
    i = cycle_index(iteration, first, cycle_mult)
    if n_cycle is not None and i >= n_cycle:
        total = n_batches * cycle_len * sum_geom(1, cycle_mult, n_cycle)
        raise ValueError(f"iteration {iteration} is past the end of {n_cycle} cycles "
                         f"({total:g} iterations)")
    if warm_up and iteration < first / 20:
        return 0.01
    start = first * sum_geom(1, cycle_mult, i)
    return cos_anneal(iteration - start, first * cycle_mult ** i)


def cycle_boundaries(n_batches: int, cycle_len: float = 1, cycle_mult: float = 1,
                     n_cycle: int = 1) -> list[int]:
    """The iterations at which each of `n_cycle` cycles starts (the first is 0), i.e. where
    `sgdr_multiplier` restarts at 1: n_batches·cycle_len·(1 + m + ... + m^(i-1))."""
    _check_cycles(n_batches, cycle_len, cycle_mult)
    return [math.ceil(n_batches * cycle_len * sum_geom(1, cycle_mult, i) - 1e-9)
            for i in range(n_cycle)]


def exp_lr(i: int, n: int, start: float, end: float) -> float:
    """Exponential sweep for the lr finder: start·(end/start)^(i/n), start at i=0, end at i=n."""
    return start * (end / start) ** (i / n)


def lin_lr(i: int, n: int, start: float, end: float) -> float:
    """Linear sweep: start + (end - start)·i/n."""
    return start + (end - start) * i / n


# --------------------------------------------------------------------------- lr suggestion

def _trim(n: int, n_skip: int, n_skip_end: int) -> tuple[int, int]:
    """The [lo, hi) slice left after skipping points at both ends. When the skips would leave
    fewer than half the points (a short run, a small dataset) they shrink in proportion, so
    a plot is never empty."""
    n_skip, n_skip_end = max(0, int(n_skip)), max(0, int(n_skip_end))
    need = min(n, max(2, math.ceil(n / 2)))
    skips = n_skip + n_skip_end
    if skips and n - skips < need:
        room = n - need
        n_skip = n_skip * room // skips
        n_skip_end = min(n_skip_end * room // skips, room - n_skip)
    return n_skip, n - n_skip_end


def _finite_prefix(lrs: Any, losses: Any) -> tuple[np.ndarray, np.ndarray]:
    """The points before the first non-finite loss (a diverged run says nothing after)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses))
    end = bad[0] if bad.size else len(losses)
    return lrs[:end], losses[:end]


def _longest_descent(losses: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest strictly decreasing subsequence, O(n log n)."""
    neg = -losses  # a decreasing run of losses is an increasing run of -losses
    tails: list[float] = []      # smallest tail value of an increasing run of each length
    tail_idx: list[int] = []
    prev = [-1] * len(losses)
    for k, v in enumerate(neg):
        j = bisect_left(tails, v)
        if j == len(tails):
            tails.append(v)
            tail_idx.append(k)
        else:
            tails[j], tail_idx[j] = v, k
        prev[k] = tail_idx[j - 1] if j else -1
    last = first = tail_idx[-1]
    while prev[first] != -1:
        first = prev[first]
    return first, last


def suggest_lr(lrs: Any, losses: Any) -> float:
    """A learning rate where the loss is still clearly falling (the course: "about 10x below
    the minimum"), from an lr-finder run.

    Rule (fastai 2's `valley`): drop everything from the first NaN/inf loss on, skip the
    first 10% and the last 5 points (fewer on a short run), find the longest decreasing
    stretch of the smoothed loss and return the lr halfway along it, which on the finder's
    exponential sweep is the geometric middle of the descent. When the loss never falls
    (fewer than 3 points in the descent) it falls back to (lr at the minimum loss)/10.
    A run whose loss never fell below its first value (or was NaN from the start) diverged at
    once: that raises a ValueError naming the start lr, since any suggestion would be a guess.
    The result is always a finite float.
    """
    lrs_arr, losses_arr = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if lrs_arr.shape != losses_arr.shape or lrs_arr.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-D and of one length, got shapes "
                         f"{lrs_arr.shape} and {losses_arr.shape}")
    if lrs_arr.size == 0:
        raise ValueError("no losses recorded: run learn.lr_find() first")
    x, y = _finite_prefix(lrs_arr, losses_arr)
    if y.size < 2 or int(np.argmin(y)) == 0:
        what = 'was NaN/inf from the first step' if y.size == 0 else \
            'never fell below its first value' if y.size > 1 else 'has a single finite point'
        raise ValueError(f'no learning rate to suggest: the lr finder\'s loss {what}, so the '
                         f'sweep diverged at once from its start lr {lrs_arr[0]:.3g}; run it from '
                         f'a lower rate, e.g. learn.lr_find(start_lr={lrs_arr[0] / 1000:.0e})')
    lo, hi = _trim(len(y), len(y) // 10, 5)
    x, y = x[lo:hi], y[lo:hi]
    first, last = _longest_descent(y)
    if last - first + 1 < 3:
        return float(x[int(np.argmin(y))] / 10)
    return float(x[first + (last - first) // 2])


# --------------------------------------------------------------------------- callbacks

class CosAnneal(Callback):
    """SGDR, fastai 0.7's `fit(lrs, n_cycle, cycle_len=, cycle_mult=)`: each group's lr is
    its base lr (the group's lr when training begins) × `sgdr_multiplier` at every batch.

    Storing the base lr of every group, not one scalar, is what keeps differential rates
    (1e-4 : 1e-3 : 1e-2) in the same ratio through every restart. The lrs are left where
    the schedule ends; the loop sets fresh lrs before each fit.
    """

    def __init__(self, cycle_len: float, cycle_mult: float = 1, *, warm_up: bool = False) -> None:
        _check_cycles(1, cycle_len, cycle_mult)
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
        x, y = _finite_prefix(self.lrs, self.losses)
        lo, hi = _trim(len(y), n_skip, n_skip_end)
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
        lo, hi = _trim(len(self.losses), n_skip, n_skip_end)
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
        _check_cycles(1, cycle_len, cycle_mult)
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
