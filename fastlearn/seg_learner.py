"""`unet_learner`: lesson 3's segmentation learner, a `DynamicUnet` on a pretrained body.

    codes = np.loadtxt(path/'codes.txt', dtype=str)
    src = (SegmentationItemList.from_folder(path/'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(get_y_fn, classes=codes))
    data = src.transform(tfms, size=(180, 240), tfm_y=True).databunch(bs=8)
    learn = unet_learner(data, efficientnet_lite0, class_weights='sqrt_median_frequency')
    learn.fit_one_cycle(6, 3e-3)                       # body frozen, as in the course
    learn.unfreeze(); learn.fit_one_cycle(24, slice(3e-3 / 40, 3e-3 / 4))
    learn.set_data(get_data((360, 480), 4))            # full size (docs/lesson3.md's get_data)
    learn.fit_one_cycle(2, slice(3e-3 / 80, 3e-3 / 8))
    ev = learn.interpret(tta=True); ev.accuracy, ev.miou, ev.iou
    learn.show_results(rows=3)

Loss and metrics come from the data's codes: cross-entropy over pixels with Void ignored,
pixel accuracy without Void and the batch mean IoU (`seg_metrics`). It trains with AdamW, as
fastai v1's learners (lesson 3's rates are Adam's); docs/lesson3.md has the whole recipe.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from .archs import arch_for
from .core import to_np
from .export import export_learner
from .images import open_image
from .learner import Learner
from .model import to_device
from .seg_metrics import (SegEvaluation, confusion, mean_iou, median_frequency, pixel_accuracy,
                          seg_cross_entropy)
from .show import show_seg_results
from .target_data import no_target, open_mask
from .unet import build_unet, unet_groups

__all__ = ['UnetLearner', 'unet_learner', 'UNET_OPT_FN', 'UNET_WD']

# fastai v1's defaults, whose lesson 3 this learner follows: its rates (3e-3 frozen, then
# slice(lr/400, lr/4)) are Adam's. Measured on CamVid's 30-epoch recipe, SGD at 3e-2 ended a
# point lower in pixel accuracy (one seed each; docs/lesson3.md).
UNET_OPT_FN = partial(torch.optim.AdamW, betas=(0.9, 0.99))
UNET_WD = 1e-2

# class_weights by name: the power of SegNet's median frequency balancing (seg_metrics)
_BALANCING = {'median_frequency': 1.0, 'sqrt_median_frequency': 0.5}

# TTA's passes after the plain one: flips of (N, C, H, W) batches, each undone on the output.
_FLIPS = ((3,), (2,), (2, 3))


class UnetLearner(Learner):
    """A U-Net learner: `Learner` plus per-pixel TTA, results, evaluation and export."""

    def __init__(self, data: Any, model: Any, layer_groups: Sequence[Any], *, arch_name: str,
                 **kwargs: Any) -> None:
        super().__init__(data, model, layer_groups, **kwargs)
        self.arch_name, self.xtra_cut = arch_name, 0
        # what export and load_learner need to rebuild the model (export.py)
        self.head_config = {'ps': None, 'xtra_fc': None, 'kind': 'unet'}

    def _log_probs(self, x: torch.Tensor, n_aug: int) -> torch.Tensor:
        """Mean probabilities of the plain pass and `n_aug` flipped ones, as log-probabilities."""
        self.model.eval()
        x = to_device(x, self.device, self.channels_last)
        with torch.inference_mode(), self.precision.autocast(self.device):
            probs = self.activation(self.model(x).float()).exp()
            for dims in _FLIPS[:n_aug]:
                probs += self.activation(self.model(x.flip(dims)).float()).exp().flip(dims)
        return (probs / (n_aug + 1)).log()

    def _check_aug(self, n_aug: int) -> None:
        if not 0 <= n_aug <= len(_FLIPS):
            raise ValueError(f'n_aug must be 0..{len(_FLIPS)} flips (1: left-right, 2: and '
                             f'up-down, 3: and both) for masks; got {n_aug}')

    def TTA(self, n_aug: int = 1, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Test-time augmentation for masks: the plain pass, then `n_aug` flipped passes (1: the
        photo flipped left-right), each prediction flipped back before it is stacked, so every
        pixel's scores line up with its target. As for classifiers:

            log_preds, y = learn.TTA()                # (2, N, C, H, W), (N, H, W)
            probs = np.mean(np.exp(log_preds), 0)
        """
        self._check_aug(n_aug)
        passes: list[list[np.ndarray]] = [[] for _ in range(n_aug + 1)]
        ys: list[np.ndarray] = []
        for x, y in self._eval_dl(is_test):
            x = to_device(x, self.device, self.channels_last)
            with torch.inference_mode(), self.precision.autocast(self.device):
                self.model.eval()
                for k, dims in enumerate(((),) + _FLIPS[:n_aug]):
                    out = self.model(x.flip(dims) if dims else x).float()
                    passes[k].append(to_np(self.activation(out).flip(dims) if dims else
                                           self.activation(out)))
            ys.append(to_np(y))
        return np.stack([np.concatenate(p) for p in passes]), np.concatenate(ys)

    def seg_confusion(self, is_test: bool = False, *, tta: bool = False) -> np.ndarray:
        """The `(C, C)` pixel confusion matrix over the validation (or test) set, Void left out,
        batch by batch (no set-sized arrays); `tta=True` averages a left-right flip in."""
        cm = np.zeros((self.data.c, self.data.c), np.int64)
        for x, y in self._eval_dl(is_test):
            cm += confusion(self._log_probs(x, int(tta)), y, self.data.c, self.data.void)
        return cm

    def interpret(self, is_test: bool = False, *, tta: bool = False) -> SegEvaluation:
        """`ev = learn.interpret()`: global pixel accuracy, per-class and mean IoU over the
        classes but Void, and the most confused pairs, from the whole set's confusion matrix."""
        return SegEvaluation(self.seg_confusion(is_test, tta=tta), list(self.data.classes),
                             self.data.void)

    def show_results(self, rows: int = 3, *, ds_type: str = 'valid', tta: bool = False,
                     figsize: tuple[float, float] | None = None) -> Any:
        """`learn.show_results(rows=3)`: photo | truth | prediction for the first `rows` images
        of the validation (or `'train'`) set, with the codes' legend."""
        ds = {'valid': self.data.val_ds, 'train': self.data.fix_ds}.get(ds_type)
        if ds is None:
            raise ValueError(f"ds_type must be 'valid' or 'train'; got {ds_type!r}")
        items = [ds[i] for i in range(min(int(rows), len(ds)))]
        x = torch.stack([torch.as_tensor(xi) for xi, _ in items])
        preds = to_np(self._log_probs(x, int(tta)).argmax(1))
        return show_seg_results([ds.denorm(xi) for xi, _ in items], [to_np(m) for _, m in items],
                                preds, self.data.classes, self.data.void, figsize=figsize)

    def _predict_image(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """`mask, probs = learn.predict('photo.jpg')`: class indices (H, W) and probabilities
        (C, H, W) at the validation transforms' size."""
        if not isinstance(image, (str, os.PathLike)) and not hasattr(image, 'convert'):
            raise TypeError(f'predict takes is_test=True/False, or an image (a file name, a Path '
                            f'or a PIL image); got {type(image).__name__}')
        tfms = no_target(self.data.val_dl.dataset.transform)  # a photo alone, no mask
        im = (image if hasattr(image, 'convert') else
              open_image(image, getattr(tfms, 'draft_size', None))).convert('RGB')
        x = tfms(im) if tfms is not None else torch.from_numpy(np.array(im)).permute(2, 0, 1)
        probs = np.exp(self.predict_array(x[None])[0])
        return probs.argmax(0), probs

    def export(self, fname: str | os.PathLike) -> Any:
        """Weights plus what prediction needs, for `load_learner(fname).predict_mask(image)`."""
        return export_learner(self, fname)


def unet_learner(data: Any, arch: Any, metrics: Sequence[Callable] | None = None, *,
                 pretrained: bool = True, weights: Any = None,
                 class_weights: Sequence[float] | str | None = None, **kwargs: Any) -> UnetLearner:
    """`learn = unet_learner(data, efficientnet_lite0)`: a U-Net for `data.c` codes on the body
    of `arch` (any architecture of the table), the body frozen (its two layer groups) and the
    decoder training. Metrics default to pixel accuracy and mean IoU, Void ignored.
    `class_weights`: one loss weight per code, `'median_frequency'` for SegNet's balancing
    computed from the training masks (`seg_metrics.median_frequency`), or
    `'sqrt_median_frequency'` for its square root (lesson 3's recipe in docs/lesson3.md)."""
    if not getattr(data, 'is_seg', False):
        raise ValueError('unet_learner needs segmentation data (masks): build it with '
                         'SegmentationItemList...label_from_func(get_y_fn, classes=codes); for '
                         'classes, tags or points use ConvLearner.pretrained(arch, data)')
    a = arch_for(arch)
    model = build_unet(a, data.c, pretrained=pretrained, weights=weights)
    groups = unet_groups(model, a)
    kwargs.setdefault('opt_fn', UNET_OPT_FN)
    kwargs.setdefault('wd', UNET_WD)
    if a.body_clip is not None:  # the table's fine-tuning settings, as ConvLearner.pretrained
        kwargs.setdefault('clip', [a.body_clip] * (len(groups) - 1) + [None])
    if metrics is None:
        metrics = [pixel_accuracy(data.void), mean_iou(data.c, data.void)]
    weights_per_code: Sequence[float] | None
    if isinstance(class_weights, str):
        if class_weights not in _BALANCING:
            raise ValueError(f"class_weights is one weight per code or one of "
                             f"{', '.join(map(repr, _BALANCING))}; got {class_weights!r}")
        weights_per_code = list(median_frequency((open_mask(p) for p in data.trn_ds.y), data.c,
                                                 data.void, power=_BALANCING[class_weights]))
    else:
        weights_per_code = class_weights
    if weights_per_code is not None:
        if len(weights_per_code) != data.c:
            raise ValueError(f'class_weights has {len(weights_per_code)} values but the data has '
                             f'{data.c} codes; pass one per code (Void\'s is ignored)')
        kwargs.setdefault('crit', seg_cross_entropy(data.void, weights_per_code))
    learn = UnetLearner(data, model, groups, metrics=metrics, arch_name=a.name, **kwargs)
    learn.bn_freeze(a.bn_freeze)
    learn.freeze()
    return learn
