"""What a learner predicts, read from its data: single-label classes, multi-label tags, regression
targets, points or masks, each with its loss, output activation and metrics.

    loss, activation, metrics = task_defaults(data)   # F.cross_entropy, log-probabilities, [accuracy]
    task_kind(data)                                    # (2, 'single-label')
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .metrics import accuracy, accuracy_thresh
from .regression import MSELossFlat, PointPixels, ScaledPointLoss, points_size
from .seg_metrics import pixel_accuracy, seg_cross_entropy

__all__ = ['task_defaults', 'task_kind', 'l1_loss', 'log_softmax_classes']


def l1_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 loss with targets shaped like the outputs: `(N,)` targets against `(N, 1)` outputs
    would otherwise broadcast to `(N, N)` and train on every pair."""
    return F.l1_loss(out, y.view_as(out) if y.numel() == out.numel() else y)


def log_softmax_classes(out: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the class axis, axis 1: `(N, C)` scores and `(N, C, H, W)`
    per-pixel scores alike (the last axis of a mask's scores is the image width)."""
    return F.log_softmax(out, dim=1)


def task_defaults(data: Any) -> tuple[Callable, Callable, list[Callable]]:
    """Loss, output activation and metrics that follow the data: the model emits logits (for
    points, coordinates in [-1, 1]: the loss scales the pixel targets, the activation gives
    pixels back; `regression` says why)."""
    size = points_size(data)
    if size is not None:
        return ScaledPointLoss(MSELossFlat(), size), PointPixels(size), []
    if getattr(data, 'is_reg', False):
        return l1_loss, (lambda out: out), []
    if getattr(data, 'is_multi', False):
        return F.binary_cross_entropy_with_logits, torch.sigmoid, [accuracy_thresh(0.5)]
    if getattr(data, 'is_seg', False):
        void = getattr(data, 'void', None)
        return seg_cross_entropy(void), log_softmax_classes, [pixel_accuracy(void)]
    return F.cross_entropy, log_softmax_classes, [accuracy]


def task_kind(data: Any) -> tuple[int, str]:
    """Outputs and kind of task: what a model built for `data` predicts."""
    kind = ('regression' if getattr(data, 'is_reg', False) else
            'multi-label' if getattr(data, 'is_multi', False) else
            'segmentation' if getattr(data, 'is_seg', False) else 'single-label')
    return int(data.c), kind
