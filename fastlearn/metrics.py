"""Metrics for the epoch table: each takes `(preds, targs)` as numpy arrays or tensors (any
device) and returns a Python float; each function's `__name__` is its column header.

    learn = ConvLearner.pretrained(arch, data, metrics=[accuracy])          # single-label
    learn = ConvLearner.pretrained(arch, data, metrics=[accuracy_thresh(0.2), f2])  # multi-label
    th = opt_th(preds, y); f2(preds, y)             # the course's planet helpers

Single-label `preds` are (N, C) scores: log-probabilities, probabilities or logits (only the
argmax matters). Multi-label `preds` are (N, C) probabilities, compared with `thresh`
(pass `sigmoid=True` where the model emits logits); their `targs` are the (N, C) 0/1 matrix.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .core import to_np

__all__ = ['accuracy', 'accuracy_np', 'accuracy_thresh', 'accuracy_multi', 'error_rate',
           'fbeta', 'f2', 'opt_th', 'precision', 'recall']

Metric = Callable[[Any, Any], float]


def _single_label(preds: Any, targs: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, target class) for (N, C) scores and (N,) class indices, or per-pixel
    (N, C, H, W) scores and (N, H, W) masks: the class axis is axis 1, as in torch's losses."""
    p, t = to_np(preds), to_np(targs)
    if p.ndim > 2 and p.shape[:1] + p.shape[2:] == t.shape:
        return p.argmax(1), t
    if p.ndim < 1 or p.shape[:-1] != t.shape:
        hint = (" (targets of the same shape as preds look multi-label: use accuracy_thresh)"
                if p.shape == t.shape else "")
        raise ValueError(f"{name}: preds of shape {p.shape} need targs of shape {p.shape[:-1]} "
                         f"(one class index per row; argmax is over the class axis), got targs of "
                         f"shape {t.shape}{hint}")
    if t.size == 0:
        raise ValueError(f"{name}: no predictions (preds of shape {p.shape})")
    return p.argmax(-1), t


def _multi_label(preds: Any, targs: Any, name: str, thresh: float, sigmoid: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted 0/1 matrix, target 0/1 matrix) for multi-label probabilities."""
    p, t = to_np(preds).astype(float), to_np(targs)
    if p.shape != t.shape:
        raise ValueError(f"{name}: preds of shape {p.shape} and targs of shape {t.shape} must "
                         f"have one shape (N, n_labels) for multi-label targets")
    if p.size == 0:
        raise ValueError(f"{name}: no predictions (preds of shape {p.shape})")
    if sigmoid:
        p = 1 / (1 + np.exp(-p))
    return (p > thresh), t.astype(bool)


def accuracy(preds: Any, targs: Any) -> float:
    """Share of rows whose argmax over the last dim equals the target class."""
    p, t = _single_label(preds, targs, 'accuracy')
    return float((p == t).mean())


def accuracy_np(preds: Any, targs: Any) -> float:
    """fastai 0.7's numpy accuracy (as in `accuracy_np(np.mean(np.exp(log_preds), 0), y)`
    after TTA): the same rule as `accuracy`."""
    return accuracy(preds, targs)


def error_rate(preds: Any, targs: Any) -> float:
    """1 - accuracy."""
    p, t = _single_label(preds, targs, 'error_rate')
    return float((p != t).mean())


def accuracy_multi(preds: Any, targs: Any, thresh: float = 0.5, *, sigmoid: bool = False) -> float:
    """Multi-label accuracy: share of (row, label) cells where `preds > thresh` matches the
    0/1 target."""
    p, t = _multi_label(preds, targs, 'accuracy_multi', thresh, sigmoid)
    return float((p == t).mean())


def accuracy_thresh(thresh: float = 0.5, *, sigmoid: bool = False) -> Metric:
    """fastai 0.7's multi-label metric factory: `metrics=[accuracy_thresh(0.5)]`."""
    def metric(preds: Any, targs: Any) -> float:
        return accuracy_multi(preds, targs, thresh, sigmoid=sigmoid)
    metric.__name__ = metric.__qualname__ = (
        'accuracy_thresh' if thresh == 0.5 else f'accuracy_thresh({thresh:g})')
    return metric


def _is_multi(preds: Any, targs: Any) -> bool:
    p, t = np.shape(preds), np.shape(targs)
    return p == t and len(p) == 2


def _labels(preds: Any, targs: Any, name: str, thresh: float, average: str | None,
            multi_average: str = 'micro') -> tuple[np.ndarray, np.ndarray, str]:
    """Predicted and true labels in scikit-learn's form, and the averaging to use.

    Targets shaped like preds are multi-label (threshold; default `multi_average`); (N,)
    targets are single-label (argmax; default 'binary' for two classes, else 'macro')."""
    p, t = to_np(preds), to_np(targs)
    if _is_multi(p, t):
        yp, yt = _multi_label(p, t, name, thresh, False)
        return yp.astype(int), yt.astype(int), average or multi_average
    yp, yt = _single_label(p, t, name)
    default = 'binary' if p.shape[-1] == 2 else 'macro'
    return yp, yt, average or default


def fbeta(preds: Any, targs: Any, beta: float = 2, thresh: float = 0.5, *,
          average: str | None = None) -> float:
    """`fbeta(preds, targs, 2)`: F-beta (weighted harmonic mean of precision and recall;
    beta=2 weighs recall more, the Planet competition's score) via scikit-learn's
    `fbeta_score`, 0 where undefined.
    Multi-label: `preds > thresh`, averaged over images ('samples': one F-beta per image, then
    the mean, as the Planet score and the course's planet helper), or `average='micro'`.
    Single-label: argmax, 'binary' (class 1 positive) for two classes, else 'macro'."""
    if beta <= 0:
        raise ValueError(f"fbeta: beta must be > 0, got {beta}")
    from sklearn.metrics import fbeta_score
    yp, yt, avg = _labels(preds, targs, 'fbeta', thresh, average, 'samples')
    return float(fbeta_score(yt, yp, beta=beta, average=avg, zero_division=0))


def _thresholds(start: float, end: float, step: float) -> np.ndarray:
    ths = np.arange(start, end, step)
    if step <= 0 or not len(ths):
        raise ValueError(f"no thresholds in [start, end) = [{start}, {end}) with step {step}; "
                         "pass start < end and step > 0, e.g. start=0.17, end=0.24, step=0.01")
    return ths


def _f2_per_threshold(preds: Any, targs: Any, ths: np.ndarray) -> np.ndarray:
    return np.array([fbeta(preds, targs, beta=2, thresh=th) for th in ths])


def f2(preds: Any, targs: Any, start: float = 0.17, end: float = 0.24, step: float = 0.01) -> float:
    """`metrics=[f2]`, `f2(preds, y)`: the course's planet F2. Multi-label: the best F2
    averaged over images over the thresholds `np.arange(start, end, step)` (0.17 to 0.23);
    `opt_th` gives the threshold. Single-label: `fbeta(preds, targs, 2)`."""
    if not _is_multi(to_np(preds), to_np(targs)):
        return fbeta(preds, targs, beta=2)
    return float(_f2_per_threshold(preds, targs, _thresholds(start, end, step)).max())


def opt_th(preds: Any, targs: Any, start: float = 0.17, end: float = 0.24,
           step: float = 0.01) -> float:
    """`th = opt_th(preds, y)`: the course's planet helper: the threshold in
    `np.arange(start, end, step)` with the best F2 averaged over images (the first on ties)."""
    p, t = to_np(preds), to_np(targs)
    if not _is_multi(p, t):
        raise ValueError(f"opt_th searches a threshold for multi-label predictions: preds and "
                         f"targs must both be (N, n_labels), got {p.shape} and {t.shape}")
    ths = _thresholds(start, end, step)
    return float(ths[int(np.argmax(_f2_per_threshold(p, t, ths)))])


def precision(preds: Any, targs: Any, thresh: float = 0.5, *, average: str | None = None) -> float:
    """True positives / predicted positives, averaged as `fbeta` does; 0 where undefined."""
    from sklearn.metrics import precision_score
    yp, yt, avg = _labels(preds, targs, 'precision', thresh, average)
    return float(precision_score(yt, yp, average=avg, zero_division=0))


def recall(preds: Any, targs: Any, thresh: float = 0.5, *, average: str | None = None) -> float:
    """True positives / actual positives, averaged as `fbeta` does; 0 where undefined."""
    from sklearn.metrics import recall_score
    yp, yt, avg = _labels(preds, targs, 'recall', thresh, average)
    return float(recall_score(yt, yp, average=avg, zero_division=0))
