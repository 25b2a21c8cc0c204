"""Image regression (head-pose style): the course's flat losses, points scaled to [-1, 1] for
the loss and returned in pixels, TTA that undoes each augmentation's move of the points, and a
plot of predicted and true points.

    tfms = tfms_from_model(arch, (180, 240), aug_tfms=transforms_side_on, crop_type=CropType.NO,
                           tfm_y=TfmType.COORD)
    data = (ImageFileList.from_csv(PATH, 'car_points.csv', folder='images')
            .label_from_csv(points=True).split_by_fname_file('valid.txt')
            .transform(tfms, tfm_y=True).databunch())
    learn = ConvLearner.pretrained(arch, data, crit=L1LossFlat())  # default: MSELossFlat()
    learn.fit(1e-2, 3, cycle_len=1)
    preds, y = learn.TTA()                  # (n_aug + 1, N, n, 2) pixels, each pass undone
    mean_distance(preds.mean(0), y)         # pixels of the image the model sees
    plot_points(learn, 8)

For points data (an `(n, 2)` array of (y, x) per image, moved with the image: `tfm_y` COORD),
the head's `2n` linear outputs live in [-1, 1] image coordinates (`targets.scale_coords`): the
learner's loss scales the pixel targets of each batch to them, and its activation maps the
outputs back to `(N, n, 2)` pixels, so `predict`, metrics and TTA all speak pixels, and a
model trained at one size predicts at another (`set_data`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .core import subplots, to_np
from .image_datasets import upright_size
from .transforms import TfmType

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ['MSELossFlat', 'L1LossFlat', 'SoftArgmax', 'point_head', 'ScaledPointLoss', 'PointPixels',
           'points_size',
           'transformed_points', 'mean_distance', 'points_tta', 'plot_points']


class MSELossFlat(nn.MSELoss):
    """The course's `MSELossFlat()`: mean squared error of the flattened outputs and targets,
    so `(N, 2)` outputs meet `(N, 1, 2)` or `(N,)` targets without broadcasting."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input.reshape(-1), target.reshape(-1).to(input.dtype))


class L1LossFlat(nn.L1Loss):
    """`L1LossFlat()`: mean absolute error of the flattened outputs and targets."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input.reshape(-1), target.reshape(-1).to(input.dtype))


class SoftArgmax(nn.Module):
    """Each channel of a `(N, n, h, w)` map as a softmax over its cells, then the expected cell
    centre: `(N, 2n)` (y, x) per channel in [-1, 1] image coordinates. Translation-equivariant,
    so a point moves with what the map responds to, which pooled features cannot say."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, h, w = x.shape
        p = x.float().reshape(n, k, -1).softmax(-1).reshape(n, k, h, w)
        ys = (torch.arange(h, dtype=p.dtype, device=x.device) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, dtype=p.dtype, device=x.device) + 0.5) / w * 2 - 1
        y, x_ = (p.sum(3) * ys).sum(2), (p.sum(2) * xs).sum(2)
        return torch.stack([y, x_], -1).reshape(n, 2 * k)


def point_head(nf: int, n_points: int = 1, hidden: int = 128, p: float = 0.1) -> nn.Sequential:
    """`ConvLearner.pretrained(arch, data, custom_head=point_head(1280))`: a head for points on
    the body's unpooled `nf`-channel maps: BatchNorm, dropout, a 1x1 convolution to `hidden`
    channels, ReLU, one map per point, `SoftArgmax`. On CamVid's car centres (the centroid of
    the car pixels: a soft-argmax of a 'car mass' map) it beats pooled and flattened heads;
    docs/lesson3_labels.md has the figures."""
    return nn.Sequential(nn.BatchNorm2d(nf), nn.Dropout2d(p), nn.Conv2d(nf, hidden, 1), nn.ReLU(),
                         nn.Conv2d(hidden, n_points, 1), SoftArgmax())


def _half(size: Any, device: torch.device) -> torch.Tensor:
    h, w = (size, size) if np.ndim(size) == 0 else size
    return torch.tensor([h / 2, w / 2], dtype=torch.float32, device=device)


class ScaledPointLoss:
    """`crit(out, y)`: `loss` between the outputs (scaled coordinates, `(N, 2n)`) and the pixel
    targets `y` `(N, n, 2)` scaled to [-1, 1] by `size` (the images' (h, w)), so the loss is
    of order 1 at any size. The learner keeps `size` in step with its data."""

    def __init__(self, loss: Callable, size: Any) -> None:
        self.loss, self.size = loss, size

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        half = _half(self.size, y.device)
        return self.loss(out, (y.reshape(len(y), -1, 2) / half - 1).reshape(out.shape))

    def __repr__(self) -> str:
        return f'ScaledPointLoss({self.loss!r}, size={self.size})'


class PointPixels:
    """The output activation of a points model: `(N, 2n)` scaled coordinates to `(N, n, 2)`
    (y, x) pixels of images of `size`."""

    def __init__(self, size: Any) -> None:
        self.size = size

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return (out.reshape(len(out), -1, 2) + 1) * _half(self.size, out.device)

    def __repr__(self) -> str:
        return f'PointPixels(size={self.size})'


def points_size(data: Any) -> Any:
    """The (h, w) that points data's targets are pixels of, or None when `data` is not points
    moved with the image (an `(N, n, 2)` regression target and `tfm_y=TfmType.COORD`)."""
    ds = getattr(data, 'trn_ds', None)
    y = getattr(ds, 'y', None)
    if ds is None or not getattr(data, 'is_reg', False) or y is None or y.ndim != 3 or y.shape[-1] != 2:
        return None
    if getattr(ds.transform, 'tfm_y', None) is not TfmType.COORD:
        return None
    return data.sz


def transformed_points(ds: Any) -> np.ndarray:
    """`ds`'s point targets as its (deterministic, validation) transform outputs them, without
    decoding a photo: each file's size comes from its header, and a blank image of that size
    carries the points through the transform. What a precomputed head trains against."""
    out = []
    for f, y in zip(ds.fnames, ds.y):
        h, w = _photo_size(ds, f)
        out.append(ds.transform(Image.new('RGB', (w, h)), y)[1])
    return np.array(out, np.float32)


def _photo_size(ds: Any, fname: str) -> tuple[int, int]:
    """(h, w) of the photo whose pixels `ds`'s points are given in (the original file, upright,
    also after `resize` made smaller copies)."""
    return upright_size((getattr(ds, 'src_root', None) or ds.root) / fname)


def mean_distance(preds: Any, targs: Any) -> float:
    """Mean Euclidean distance in pixels between predicted and true (y, x) points (any shape
    ending in 2, or the flat outputs of one point per image)."""
    p, t = to_np(preds).astype(np.float64), to_np(targs).astype(np.float64)
    if p.size != t.size or p.size % 2:
        raise ValueError(f"mean_distance: preds of shape {p.shape} and targs of shape {t.shape} "
                         "must hold the same (y, x) pairs")
    return float(np.sqrt(((p.reshape(-1, 2) - t.reshape(-1, 2)) ** 2).sum(-1)).mean())


def _reference_points(ds: Any) -> np.ndarray:
    """Four points per image, in the pixels of its file, that no augmentation makes collinear:
    pushed through a transform beside the image, they reveal the affine map it applied."""
    refs = []
    for f in ds.fnames:
        h, w = _photo_size(ds, f)
        refs.append([[h / 4, w / 4], [h / 4, 3 * w / 4], [3 * h / 4, w / 4], [3 * h / 4, 3 * w / 4]])
    return np.array(refs, np.float32)


def _with_targets(ds: Any, y: np.ndarray, transform: Any) -> Any:
    new = copy.copy(ds)
    new.y, new.transform = y, transform
    return new


def _undo(pred: np.ndarray, ref_aug: np.ndarray, ref_plain: np.ndarray) -> np.ndarray:
    """Map each image's predicted points from the augmented frame to the plain one by the
    affine map that takes its reference points there (least squares, exact for the flips,
    rotations, zooms and crops an augmentation makes)."""
    out = np.empty_like(pred)
    for i in range(len(pred)):
        a = np.concatenate([ref_aug[i], np.ones((len(ref_aug[i]), 1))], 1)
        m = np.linalg.lstsq(a, ref_plain[i], rcond=None)[0]  # (3, 2)
        out[i] = np.concatenate([pred[i], np.ones((len(pred[i]), 1))], 1) @ m
    return out


def points_tta(learn: Any, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`learn.TTA()` for points: one plain pass and `n_aug` passes through the training
    transforms, each augmented prediction moved back into the plain image's frame (the
    transform's draw carries reference points beside the image; the affine map between them is
    undone), stacked as `(n_aug + 1, N, n, 2)` pixels, with the plain targets."""
    data = learn.data
    if is_test:
        raise ValueError('points_tta: the test set has no points to line predictions up with; '
                         'use learn.predict(is_test=True)')
    plain, y = learn.predict_dl_with_targs(data.val_dl)
    refs = _reference_points(data.val_ds)
    ref_plain = learn.predict_dl_with_targs(data.get_dl(
        _with_targets(data.val_ds, refs, data.val_ds.transform), False))[1]
    aug_ds = _with_targets(data.val_ds, refs, data.trn_ds.transform)
    passes = [plain]
    for _ in range(n_aug):
        pred, ref_aug = learn.predict_dl_with_targs(data.get_dl(aug_ds, False))
        passes.append(_undo(pred, ref_aug, ref_plain))
    return np.stack(passes).astype(np.float32), y


def plot_points(learn: Any, n: int = 8, preds: Any = None, *, rows: int = 2,
                figsize: tuple[float, float] = (12, 5)) -> Figure:
    """`plot_points(learn, 8)`: the first `n` validation images with the true points (green
    circles) and the predicted ones (red crosses), titled by the distance in pixels. `preds`
    (`(N, n, 2)` pixels, e.g. a TTA mean) defaults to `learn.predict()`."""
    ds = learn.data.val_ds
    p = to_np(learn.predict() if preds is None else preds).reshape(len(ds), -1, 2)
    n = min(n, len(ds))
    cols = max(1, -(-n // rows))
    fig, axes = subplots(rows, cols, figsize=figsize)
    for k, ax in enumerate(np.asarray(axes).reshape(-1)):
        ax.axis('off')
        if k >= n:
            continue
        x, t = ds[k]
        t = to_np(t).reshape(-1, 2)
        ax.imshow(ds.denorm(x))
        # imshow puts pixel (r, c)'s centre at (c, r): continuous coordinates are 0.5 further
        ax.scatter(t[:, 1] - 0.5, t[:, 0] - 0.5, s=80, facecolors='none', edgecolors='lime')
        ax.scatter(p[k][:, 1] - 0.5, p[k][:, 0] - 0.5, s=60, c='red', marker='x')
        ax.set_title(f'{mean_distance(p[k], t):.1f} px')
    return fig
