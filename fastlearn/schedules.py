"""Learning-rate schedules and the lr finder's suggestion as pure functions of the step: what
`sgdr.py`'s callbacks apply, testable and plottable without a model (`from fastlearn.sgdr import *`
gives these names too, as fastai 0.7's sgdr module did).

    sgdr_multiplier(i, n_batches, cycle_len=1, cycle_mult=2)   # SGDR's lr multiplier at batch i
    cycle_boundaries(n_batches, 1, 2, n_cycle=3)               # where each cycle restarts
    suggest_lr(learn.sched.lrs, learn.sched.losses)            # lr_find's "valley"
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import numpy as np

from .core import sum_geom

__all__ = ['cos_anneal', 'sgdr_multiplier', 'cycle_index', 'cycle_boundaries', 'exp_lr', 'lin_lr',
           'suggest_lr', 'check_cycles', 'trim',
           'finite_prefix']


# --------------------------------------------------------------------------- pure schedules

def cos_anneal(t: float, T: float) -> float:
    """½(1 + cos(π t/T)): 1 at t=0, 0.5 at t=T/2, 0 at t=T."""
    return 0.5 * (1 + math.cos(math.pi * t / T))


def check_cycles(n_batches: int, cycle_len: float, cycle_mult: float) -> None:
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
    check_cycles(n_batches, cycle_len, cycle_mult)
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
    check_cycles(n_batches, cycle_len, cycle_mult)
    return [math.ceil(n_batches * cycle_len * sum_geom(1, cycle_mult, i) - 1e-9)
            for i in range(n_cycle)]


def exp_lr(i: int, n: int, start: float, end: float) -> float:
    """Exponential sweep for the lr finder: start·(end/start)^(i/n), start at i=0, end at i=n."""
    return start * (end / start) ** (i / n)


def lin_lr(i: int, n: int, start: float, end: float) -> float:
    """Linear sweep: start + (end - start)·i/n."""
    return start + (end - start) * i / n


# --------------------------------------------------------------------------- lr suggestion

def trim(n: int, n_skip: int, n_skip_end: int) -> tuple[int, int]:
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


def finite_prefix(lrs: Any, losses: Any) -> tuple[np.ndarray, np.ndarray]:
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
    x, y = finite_prefix(lrs_arr, losses_arr)
    if y.size < 2 or int(np.argmin(y)) == 0:
        what = 'was NaN/inf from the first step' if y.size == 0 else \
            'never fell below its first value' if y.size > 1 else 'has a single finite point'
        raise ValueError(f'no learning rate to suggest: the lr finder\'s loss {what}, so the '
                         f'sweep diverged at once from its start lr {lrs_arr[0]:.3g}; run it from '
                         f'a lower rate, e.g. learn.lr_find(start_lr={lrs_arr[0] / 1000:.0e})')
    lo, hi = trim(len(y), len(y) // 10, 5)
    x, y = x[lo:hi], y[lo:hi]
    first, last = _longest_descent(y)
    if last - first + 1 < 3:
        return float(x[int(np.argmin(y))] / 10)
    return float(x[first + (last - first) // 2])
