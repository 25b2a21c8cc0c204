"""Multi-label (planet style) beyond the metrics: per-tag thresholds and which tags a model
misses or invents.

    log_preds, y = learn.TTA(); probs = np.mean(log_preds, 0)   # sigmoid probabilities
    th = opt_th(probs, y)                          # one threshold (the course's planet helper)
    learn.thresholds = opt_thresholds(probs, y)    # one per tag; predict(image) then uses them
    f2_samples(probs, y, learn.thresholds)         # F2 averaged over images at those thresholds
    print(TagInterpretation(probs, y, data.classes, learn.thresholds))  # missed / invented tags

F2 here is the Planet competition's score: one F2 per image (over its tags), then the mean over
images, what `fbeta(preds, targs, 2, thresh)` computes with scikit-learn; `f2_samples` is the
same number in numpy, fast enough to search thresholds with.

Thresholds chosen on the validation set flatter the validation score (the course did this);
choose them on predictions the model did not train on (a held-out part, or out-of-fold
predictions) to report an honest figure.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import to_np

__all__ = ['f2_samples', 'fbeta_samples', 'opt_thresholds', 'as_thresholds', 'tags_above',
           'TagInterpretation']


def _pair(preds: Any, targs: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    p, t = to_np(preds).astype(np.float64), to_np(targs).astype(bool)
    if p.ndim != 2 or p.shape != t.shape or not p.size:
        raise ValueError(f"{name}: preds and targs must both be (N, n_tags) and not empty, got "
                         f"{p.shape} and {t.shape}")
    return p, t


def as_thresholds(thresholds: Any, n_tags: int) -> np.ndarray:
    """A scalar or one threshold per tag, as an `(n_tags,)` float array (checked)."""
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_tags,)) \
        if np.ndim(thresholds) == 0 else np.asarray(thresholds, dtype=np.float64)
    if th.shape != (n_tags,):
        raise ValueError(f"thresholds: pass one number or one per tag ({n_tags}), got "
                         f"{np.shape(thresholds)}; e.g. learn.thresholds = opt_thresholds(probs, y)")
    if not np.isfinite(th).all():
        raise ValueError(f"thresholds must be finite numbers, got {th.tolist()}")
    return np.array(th)


def _fbeta_rows(yp: np.ndarray, yt: np.ndarray, beta: float) -> np.ndarray:
    """One F-beta per image; 0 for an image with nothing predicted and nothing true, as
    scikit-learn's `zero_division=0`."""
    tp = (yp & yt).sum(-1)
    fp, fn = (yp & ~yt).sum(-1), (~yp & yt).sum(-1)
    b2 = beta * beta
    den = (1 + b2) * tp + b2 * fn + fp
    return np.where(den > 0, (1 + b2) * tp / np.maximum(den, 1), 0.0)


def fbeta_samples(preds: Any, targs: Any, thresholds: Any = 0.5, beta: float = 2) -> float:
    """F-beta averaged over images at `thresholds` (a scalar or one per tag): equal to
    `fbeta(preds, targs, beta, thresh)` for a scalar."""
    if beta <= 0:
        raise ValueError(f"fbeta_samples: beta must be > 0, got {beta}")
    p, t = _pair(preds, targs, 'fbeta_samples')
    return float(_fbeta_rows(p > as_thresholds(thresholds, p.shape[1]), t, beta).mean())


def f2_samples(preds: Any, targs: Any, thresholds: Any = 0.2) -> float:
    """`f2_samples(probs, y, learn.thresholds)`: the Planet score at given thresholds."""
    return fbeta_samples(preds, targs, thresholds, beta=2)


def opt_thresholds(preds: Any, targs: Any, grid: Sequence[float] | None = None, *,
                   beta: float = 2, n_pass: int = 2) -> np.ndarray:
    """`learn.thresholds = opt_thresholds(probs, y)`: one threshold per tag maximising F-beta
    averaged over images. Starts from the best single threshold of `grid` (default 0.02 to 0.9
    by 0.02), then, `n_pass` times, moves each tag's threshold to its best value on the grid with
    the others held (coordinate ascent: the score is not separable over tags, since each
    image's F-beta mixes its tags). Ties keep the current value, so a tag that does not matter
    keeps the global threshold."""
    p, t = _pair(preds, targs, 'opt_thresholds')
    g = np.round(np.arange(0.02, 0.9001, 0.02), 4) if grid is None else np.asarray(grid, float)
    if g.ndim != 1 or not len(g):
        raise ValueError(f"opt_thresholds: grid must be a non-empty 1-D list of thresholds, "
                         f"got {grid!r}")
    scores = [_fbeta_rows(p > th, t, beta).mean() for th in g]
    th = np.full(p.shape[1], g[int(np.argmax(scores))])
    yp = p > th
    best = _fbeta_rows(yp, t, beta).mean()
    for _ in range(n_pass):
        for j in range(p.shape[1]):
            for v in g:
                yp[:, j] = p[:, j] > v
                s = _fbeta_rows(yp, t, beta).mean()
                if s > best + 1e-12:
                    best, th[j] = s, v
            yp[:, j] = p[:, j] > th[j]
    return th


def tags_above(probs: Any, classes: Sequence[str], thresholds: Any = 0.5
               ) -> tuple[list[str], np.ndarray]:
    """The tags of one image's probabilities over their thresholds, and their indices."""
    p = to_np(probs).astype(np.float64).reshape(-1)
    if len(p) != len(classes):
        raise ValueError(f"tags_above: {len(p)} probabilities for {len(classes)} classes")
    idx = np.flatnonzero(p > as_thresholds(thresholds, len(p)))
    return [classes[int(i)] for i in idx], idx


class TagInterpretation:
    """Which tags a multi-label model misses and which it invents, at given thresholds.

        interp = TagInterpretation(probs, y, data.classes, learn.thresholds)
        print(interp)               # per tag: true, predicted, missed, invented, precision, recall
        interp.most_confused(5)     # (missed tag, invented tag, images): one taken for the other
        interp.worst_images(5)      # indices of the images with the lowest F2
    """

    def __init__(self, preds: Any, targs: Any, classes: Sequence[str], thresholds: Any = 0.5
                 ) -> None:
        p, t = _pair(preds, targs, 'TagInterpretation')
        if len(classes) != p.shape[1]:
            raise ValueError(f"TagInterpretation: {len(classes)} classes for {p.shape[1]} tags")
        self.classes, self.probs, self.targs = list(classes), p, t
        self.thresholds = as_thresholds(thresholds, p.shape[1])
        self.pred = p > self.thresholds

    @property
    def missed(self) -> np.ndarray:
        """Per tag: images that have it but were not given it (false negatives)."""
        return (~self.pred & self.targs).sum(0)

    @property
    def invented(self) -> np.ndarray:
        """Per tag: images given it that do not have it (false positives)."""
        return (self.pred & ~self.targs).sum(0)

    def per_tag(self) -> list[dict[str, Any]]:
        """One row per tag: name, threshold, true, predicted, missed, invented, precision, recall."""
        rows = []
        for j, c in enumerate(self.classes):
            n_true, n_pred = int(self.targs[:, j].sum()), int(self.pred[:, j].sum())
            tp = int((self.pred[:, j] & self.targs[:, j]).sum())
            rows.append(dict(tag=c, threshold=float(self.thresholds[j]), true=n_true,
                             predicted=n_pred, missed=int(self.missed[j]),
                             invented=int(self.invented[j]),
                             precision=tp / n_pred if n_pred else 0.0,
                             recall=tp / n_true if n_true else 0.0))
        return rows

    def most_confused(self, n: int = 5) -> list[tuple[str, str, int]]:
        """Pairs (missed tag, invented tag, number of images where both happened): the model
        took the first for the second, e.g. ('Pedestrian', 'Bicyclist', 3)."""
        pairs: Counter = Counter()
        for miss, inv in zip(~self.pred & self.targs, self.pred & ~self.targs):
            for a in np.flatnonzero(miss):
                for b in np.flatnonzero(inv):
                    pairs[self.classes[a], self.classes[b]] += 1
        return [(a, b, k) for (a, b), k in pairs.most_common(n)]

    def worst_images(self, n: int = 5, beta: float = 2) -> np.ndarray:
        """Indices of the `n` images with the lowest F-beta, worst first."""
        return np.argsort(_fbeta_rows(self.pred, self.targs, beta), kind='stable')[:n]

    def __repr__(self) -> str:
        head = f"{'tag':<14}{'thresh':>7}{'true':>6}{'pred':>6}{'missed':>8}{'invented':>9}" \
               f"{'prec':>7}{'recall':>7}"
        lines = [head] + [f"{r['tag']:<14}{r['threshold']:>7.2f}{r['true']:>6}{r['predicted']:>6}"
                          f"{r['missed']:>8}{r['invented']:>9}{r['precision']:>7.2f}"
                          f"{r['recall']:>7.2f}" for r in self.per_tag()]
        f2 = _fbeta_rows(self.pred, self.targs, 2).mean()
        return '\n'.join(lines + [f'F2 averaged over {len(self.probs)} images: {f2:.4f}'])
