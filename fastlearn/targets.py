"""Targets that follow the image: masks, boxes and points as torchvision tv_tensors, and the
scaling of coordinates to [-1, 1] for regression.

    trn_tfms, val_tfms = tfms_from_model(resnet34, (360, 480), tfm_y=TfmType.COORD)
    x, pts = trn_tfms(im, np.array([[228.8, 349.4]]))   # (n, 2) points, y x, in pixels
    target = scale_coords(pts, (360, 480))              # in [-1, 1] while on the image
    pixels = unscale_coords(preds, (360, 480))          # predictions back in pixels

Coordinates are continuous pixels: (0, 0) is the image's top-left corner, the centre of pixel
(r, c) is (r + 0.5, c + 0.5), the bottom-right corner is (h, w). Boxes are `(n, 4)` (top, left,
bottom, right); points are an `(n, 2)` array of (y, x). A flat array is read as boxes (the
course's COORD), so points must come as a 2-D array with 2 columns.

Points that leave the image (a rotation, a zoom or a crop moving them past the border) are
neither dropped nor clipped: they keep their coordinates outside [0, h) x [0, w), so every
image keeps the same number of points and the target still says where the point went. Boxes
are clipped to the image, as before.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

__all__ = ['is_points', 'scale_coords', 'unscale_coords']


def is_points(y: Any) -> bool:
    """A COORD target given as an `(n, 2)` array (or tensor) of (y, x) points, not boxes."""
    shape = getattr(y, 'shape', None)
    if shape is None:
        shape = np.shape(y)
    return len(shape) == 2 and shape[-1] == 2


def as_mask(y: Any) -> tv_tensors.Mask:
    a = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y))
    if a.ndim != 2 or a.is_floating_point():
        raise ValueError(f"a CLASS target must be an integer HxW mask (PIL 'L'/'P' or array); "
                         f"got shape {tuple(a.shape)} dtype {a.dtype}")
    return tv_tensors.Mask(a[None])


def as_boxes(y: Any, size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    a = np.asarray(y, dtype=np.float32)
    if a.size % 4:
        raise ValueError(f"a COORD target must be (n, 4) boxes (top, left, bottom, right) or an "
                         f"(n, 2) array of (y, x) points; got {a.size} numbers in shape "
                         f"{a.shape}. Pass points as np.array(pts).reshape(-1, 2)")
    a = a.reshape(-1, 4)[:, [1, 0, 3, 2]]  # TLBR -> torchvision's XYXY
    return TF.clamp_bounding_boxes(tv_tensors.BoundingBoxes(a, format='XYXY', canvas_size=size))


def as_points(y: Any, size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """(y, x) points as zero-size boxes: torchvision moves boxes with one coordinate convention
    in every transform (its KeyPoints mix pixel-index and continuous conventions between flips
    and resizes), and `clamping_mode=None` keeps points that leave the image where they went."""
    a = np.asarray(y, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"points must be finite numbers; got {a.tolist()}")
    xy = a[:, [1, 0]]
    return tv_tensors.BoundingBoxes(np.concatenate([xy, xy], 1), format='XYXY', canvas_size=size,
                                    clamping_mode=None)


def coords_out(t: tv_tensors.BoundingBoxes, points: bool) -> np.ndarray:
    """Boxes back to (n, 4) top, left, bottom, right, or points to (n, 2) y, x, float32."""
    a = t.as_subclass(torch.Tensor).numpy()
    return (a[:, [1, 0]] if points else a[:, [1, 0, 3, 2]]).astype(np.float32)


def _hw(size: Any) -> np.ndarray:
    h, w = (size, size) if np.ndim(size) == 0 else size
    return np.array([h, w], np.float32)


def scale_coords(y: Any, size: int | tuple[int, int]) -> np.ndarray:
    """`scale_coords(pts, (360, 480))`: (y, x) pixel coordinates (points `(..., 2)` or boxes
    `(..., 4)`) to [-1, 1] by the image size, -1 the top/left edge and 1 the bottom/right one,
    so a regression loss sees targets of order 1 whatever the image size."""
    a = np.asarray(y, dtype=np.float32)
    half = np.tile(_hw(size) / 2, a.shape[-1] // 2)
    return a / half - 1


def unscale_coords(y: Any, size: int | tuple[int, int]) -> np.ndarray:
    """`unscale_coords(preds, (360, 480))`: the inverse of `scale_coords`, predictions in
    [-1, 1] back to pixels of an image of `size`."""
    a = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float32)
    half = np.tile(_hw(size) / 2, a.shape[-1] // 2)
    return (a + 1) * half
