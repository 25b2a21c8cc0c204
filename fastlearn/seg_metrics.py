"""Losses and metrics for masks: the class axis is axis 1, as in every torch loss.

    learn = unet_learner(data, efficientnet_lite0)    # loss and metrics from the data's codes
    loss = seg_cross_entropy(void=11)                 # cross-entropy over pixels, Void ignored
    metrics = [pixel_accuracy(void=11), mean_iou(12, void=11)]

    cm = confusion(preds, masks, 12, void=11)          # (12, 12) pixel counts, Void rows dropped
    global_accuracy(cm), iou_per_class(cm), miou(cm, void=11)

Predictions are `(N, C, H, W)` scores (log-probabilities, probabilities or logits: only the
argmax over axis 1 matters) or `(N, H, W)` class indices; targets are `(N, H, W)` class indices.
Pixels whose target is Void count for nothing; a Void prediction on another class is an error.

`pixel_accuracy` and `mean_iou` are batch metrics for the epoch table (the mean over batches,
weighted by images). The figures to quote come from `confusion` accumulated over the whole set
(`learn.seg_confusion()`): global accuracy over every non-Void pixel, and the IoU of each class
from the totals, as SegNet's paper reports them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .core import to_np

__all__ = ['seg_cross_entropy', 'median_frequency', 'pixel_accuracy', 'mean_iou', 'confusion',
           'global_accuracy', 'iou_per_class', 'miou', 'SegEvaluation']

Metric = Callable[[Any, Any], float]


def seg_cross_entropy(void: int | None = None, weight: Sequence[float] | None = None
                      ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy over the pixels of `(N, C, H, W)` logits and `(N, H, W)` masks, the mean
    over non-Void pixels (a batch of Void only gives 0, not NaN). `weight`: one weight per class
    (e.g. `median_frequency(masks, 12, void=11)`, SegNet's class balancing); the mean is then
    weighted by the pixels' class weights, as torch's weighted cross-entropy."""
    ignore = -100 if void is None else int(void)
    w = None if weight is None else torch.as_tensor(np.asarray(weight, np.float32))

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if out.ndim < 3 or out.shape[0] != y.shape[0] or out.shape[2:] != y.shape[1:]:
            raise ValueError(f'seg_cross_entropy: outputs of shape {tuple(out.shape)} need '
                             f'masks of shape {(out.shape[0], *out.shape[2:])} (classes on axis '
                             f'1), got {tuple(y.shape)}')
        keep = y != ignore
        if w is None:
            total = F.cross_entropy(out, y, ignore_index=ignore, reduction='sum')
            return total / keep.sum().clamp(min=1)
        wd = w.to(out.device)
        total = F.cross_entropy(out, y, weight=wd, ignore_index=ignore, reduction='sum')
        return total / wd[y[keep]].sum().clamp(min=1e-12)
    loss.__name__ = loss.__qualname__ = 'seg_cross_entropy'
    loss.void, loss.weight = void, w  # type: ignore[attr-defined]
    return loss


def median_frequency(masks: Any, n_classes: int, void: int | None = None, power: float = 1.0
                     ) -> np.ndarray:
    """SegNet's median frequency balancing: for each class, `freq = its pixels / the pixels of
    the masks it appears in`, weight = `(median(freq) / freq) ** power` (Void and absent
    classes: 0). `power=0.5` halves the spread on a log scale: rare classes still count more,
    without the common ones' accuracy falling as far (docs/lesson3.md has the figures).

        w = median_frequency((open_mask(p) for p in data.trn_ds.y), data.c, data.void)
        learn = unet_learner(data, arch, class_weights=w)
    """
    pixels, present_in = np.zeros(n_classes), np.zeros(n_classes)
    for m in masks:
        counts = np.bincount(np.asarray(m, np.int64).ravel(), minlength=n_classes)[:n_classes]
        pixels += counts
        present_in += (counts > 0) * counts.sum()
    if void is not None:
        pixels[void] = 0
    seen = pixels > 0
    if not seen.any():
        raise ValueError('median_frequency: the masks hold no pixel of any class but Void')
    freq = np.where(seen, pixels / np.maximum(present_in, 1), 0)
    ratio = np.median(freq[seen]) / np.where(seen, freq, 1)
    return np.where(seen, ratio ** float(power), 0).astype(np.float32)


def _labels(preds: Any, targs: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, target class) per pixel: argmax over axis 1 of scores."""
    p, t = to_np(preds), to_np(targs)
    if p.ndim == t.ndim + 1 and p.shape[:1] + p.shape[2:] == t.shape:
        p = p.argmax(1)
    if p.shape != t.shape:
        raise ValueError(f'{name}: preds of shape {p.shape} need masks of shape '
                         f'{p.shape[:1] + p.shape[2:]} (scores (N, C, H, W), classes on axis 1) or '
                         f'{p.shape} (class indices), got masks of shape {t.shape}')
    return p.astype(np.int64), t.astype(np.int64)


def confusion(preds: Any, targs: Any, n_classes: int, void: int | None = None) -> np.ndarray:
    """`(n_classes, n_classes)` pixel counts, row = true class, column = predicted class; pixels
    whose target is `void` are left out. Sum the matrices of several batches for a whole set."""
    p, t = _labels(preds, targs, 'confusion')
    keep = t != void if void is not None else np.ones(t.shape, bool)
    p, t = p[keep], t[keep]
    bad = (t < 0) | (t >= n_classes) | (p < 0) | (p >= n_classes)
    if bad.any():
        raise ValueError(f'confusion: class indices must lie in 0..{n_classes - 1}; found '
                         f'{int(max(t.max(), p.max()))}; pass n_classes=len(codes)')
    return np.bincount(t * n_classes + p, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def global_accuracy(cm: np.ndarray) -> float:
    """Share of (non-Void) pixels predicted right: the trace over the total."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float('nan')


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Intersection over union of each class, `tp / (tp + fp + fn)`; NaN for a class that is
    neither in the targets nor in the predictions."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def miou(cm: np.ndarray, void: int | None = None) -> float:
    """Mean IoU over the classes but `void` (CamVid: the 11 classes), skipping classes absent
    from both targets and predictions."""
    iou = iou_per_class(cm)
    if void is not None:
        iou = np.delete(iou, void)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan')


def pixel_accuracy(void: int | None = None) -> Metric:
    """`metrics=[pixel_accuracy(void=11)]`: share of non-Void pixels predicted right (the
    epoch table's column `pixel_acc`)."""
    def metric(preds: Any, targs: Any) -> float:
        p, t = _labels(preds, targs, 'pixel_accuracy')
        keep = t != void if void is not None else np.ones(t.shape, bool)
        return float((p[keep] == t[keep]).mean()) if keep.any() else 0.0
    metric.__name__ = metric.__qualname__ = 'pixel_acc'  # the epoch table's 12-wide column
    return metric


def mean_iou(n_classes: int, void: int | None = None) -> Metric:
    """`metrics=[mean_iou(12, void=11)]`: the batch's mean IoU over the classes but Void."""
    def metric(preds: Any, targs: Any) -> float:
        m = miou(confusion(preds, targs, n_classes, void), void)
        return 0.0 if np.isnan(m) else m
    metric.__name__ = metric.__qualname__ = 'mean_iou'
    return metric


@dataclass
class SegEvaluation:
    """A set's pixel confusion matrix and what lesson 3 reads from it (`learn.interpret()`).

        ev.accuracy, ev.miou       # global pixel accuracy and mean IoU, Void ignored
        ev.iou['Car']              # one class's IoU
        ev.most_confused(3)        # [('Sidewalk', 'Road', 0.021), ...]: share of all pixels
    """
    cm: np.ndarray
    classes: Sequence[str]
    void: int | None = None

    @property
    def accuracy(self) -> float:
        return global_accuracy(self.cm)

    @property
    def miou(self) -> float:
        return miou(self.cm, self.void)

    @property
    def iou(self) -> dict[str, float]:
        """IoU per class name, Void left out (NaN: in neither targets nor predictions)."""
        ious = iou_per_class(self.cm)
        return {str(c): float(v) for k, (c, v) in enumerate(zip(self.classes, ious))
                if k != self.void}

    def most_confused(self, n: int = 5) -> list[tuple[str, str, float]]:
        """The `n` largest off-diagonal cells as (true, predicted, share of all non-Void
        pixels), the largest first."""
        off = self.cm.astype(float).copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind='stable')[:n]
        total = max(self.cm.sum(), 1)
        return [(str(self.classes[i]), str(self.classes[j]), float(off[i, j] / total))
                for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]

    def __repr__(self) -> str:
        ious = ', '.join(f'{c} {v:.3f}' for c, v in self.iou.items())
        return (f'SegEvaluation: pixel accuracy {self.accuracy:.4f}, mean IoU {self.miou:.4f} '
                f'(Void ignored)\n  IoU: {ious}')
