"""The (mean, std) a model's weights were trained with: `tfms_from_model` normalises with them.

    model_stats(resnet34)             # ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model_stats('efficientnet_lite0') # mean and std 0.5: TensorFlow's weights
"""
from __future__ import annotations

from typing import Any

from .archs import table_arch

__all__ = ['Stats', 'imagenet_stats', 'inception_stats', 'check_stats', 'model_stats']

Stats = tuple[tuple[float, ...], tuple[float, ...]]
imagenet_stats: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
inception_stats: Stats = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def check_stats(stats: Any) -> Stats:
    """`stats` as `(mean, std)` tuples of floats, or a ValueError saying what was wrong."""
    try:
        mean, std = (tuple(float(v) for v in s) for s in stats)
    except (TypeError, ValueError):
        mean = std = ()
    if not mean or len(mean) != len(std) or min(std) <= 0:
        raise ValueError(f"stats must be (mean, std) with one value per channel and std > 0; "
                         f"got {stats!r}. Pass e.g. imagenet_stats")
    return mean, std


def model_stats(f_model: Any) -> Stats:
    """`model_stats(resnet34)`: the (mean, std) a model's weights expect. In order: its `.stats`
    (fastlearn's architecture table); for a timm name, timm's pretrained config; a timm model's
    `pretrained_cfg`; a torchvision builder's default weights' `transforms()`; else
    `imagenet_stats`. A name in the table gets the table's stats, since its weights may not be
    timm's (`'efficientnet_lite0'` loads TensorFlow's, trained with mean and std 0.5). None of
    these downloads anything."""
    if isinstance(f_model, str):
        f_model = table_arch(f_model) or f_model
    stats = getattr(f_model, 'stats', None)
    if stats is not None:
        return check_stats(stats)
    if isinstance(f_model, str):
        return _timm_stats(f_model) or _torchvision_stats(f_model) or imagenet_stats
    cfg = getattr(f_model, 'pretrained_cfg', None)
    if isinstance(cfg, dict) and 'mean' in cfg and 'std' in cfg:
        return check_stats((cfg['mean'], cfg['std']))
    return _torchvision_stats(f_model) or imagenet_stats


def _torchvision_stats(f_model: Any) -> Stats | None:
    from torchvision.models import get_model_weights
    try:
        weights = get_model_weights(f_model)
        preset = (getattr(weights, 'DEFAULT', None) or next(iter(weights))).transforms()
        return check_stats((preset.mean, preset.std))
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None  # not a torchvision builder, or weights whose preset has no normalisation


def _timm_stats(name: str) -> Stats | None:
    try:
        from timm.models import get_pretrained_cfg  # optional; reads timm's registry, no download
        cfg = get_pretrained_cfg(name)
    except Exception:  # timm absent, or a name its registry rejects: fall back, as documented
        return None
    return None if cfg is None else check_stats((cfg.mean, cfg.std))
