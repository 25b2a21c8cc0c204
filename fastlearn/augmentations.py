"""The course's augmentations as torchvision v2 transforms: each draws its random parameters once
per image and applies them to the image and to its target (mask, points, boxes) alike.

    tfms = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    aug_tfms = [RandomRotate(10), RandomLighting(0.05, 0.05), RandomFlip()]   # = transforms_side_on

`transforms.py` builds the pipelines around them (and re-exports every name here).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ['RandomRotate', 'RandomRotateZoom', 'RandomLighting', 'RandomFlip', 'RandomDihedral',
           'transforms_basic', 'transforms_side_on', 'transforms_top_down', 'check_number']


def check_number(name: str, value: Any, lo: float, hi: float, example: str, *,
                  integer: bool = False, optional: bool = False) -> Any:
    """`value` as a float (an int if `integer`) in [lo, hi], or None if `optional`."""
    if value is None and optional:
        return None
    kind: Any = numbers.Integral if integer else numbers.Real  # (mypy's numbers ABCs lack <= and int())
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        rule = (('a positive int' if lo == 1 else f'an int >= {lo}') if integer
                else f'a number in [{lo}, {hi}]')
        raise ValueError(f"{name} must be {rule}; got {value!r}. Pass e.g. {example}")
    return int(value) if integer else float(value)


# ---------------------------------------------------------------- augmentations (v2 transforms)

def _rotate_grid(h: int, w: int, angle: float) -> torch.Tensor:
    """Sampling grid for a counter-clockwise rotation about the centre (torchvision's sense, so
    boxes rotated by `TF.rotate` agree). Built in numpy: `F.affine_grid` is several times slower
    at these sizes."""
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    xs = (np.arange(w, dtype=np.float32) * 2 + 1) / w - 1
    ys = ((np.arange(h, dtype=np.float32) * 2 + 1) / h - 1)[:, None]
    g = np.empty((1, h, w, 2), np.float32)
    g[0, ..., 0] = c * xs - (s * h / w) * ys
    g[0, ..., 1] = (s * w / h) * xs + c * ys
    return torch.from_numpy(g)


def _warp(t: torch.Tensor, angle: float, mode: str, padding: str) -> torch.Tensor:
    h, w = t.shape[-2:]
    x = t.as_subclass(torch.Tensor).reshape(1, -1, h, w).float()
    out = F.grid_sample(x, _rotate_grid(h, w, angle), mode=mode, padding_mode=padding,
                        align_corners=False).reshape(t.shape)
    if not t.is_floating_point():
        out = out.round_().clamp_(0, 255) if t.dtype == torch.uint8 else out.round_()
    out = out.to(t.dtype)
    return tv_tensors.wrap(out, like=t) if isinstance(t, tv_tensors.TVTensor) else out


class RandomRotate(v2.Transform):
    """`RandomRotate(10)`: with probability p, rotate by an angle uniform in [-deg, deg].

    Images get a mirrored border (no black corners to learn from); masks get label 0 (the
    pipeline's `void` when set) and nearest-neighbour sampling; boxes become the box around the
    rotated box; points turn with the image."""

    def __init__(self, deg: float, p: float = 0.75) -> None:
        super().__init__()
        self.deg = check_number('deg', deg, 0, 180, 'RandomRotate(10)')
        self.p = check_number('p', p, 0, 1, 'RandomRotate(10, p=0.75)')

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u = torch.rand(2).tolist()
        return {'angle': (2 * u[1] - 1) * self.deg if u[0] < self.p else 0.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        angle = params['angle']
        if angle == 0.0:
            return inpt
        if isinstance(inpt, (tv_tensors.BoundingBoxes, Image.Image)):
            return TF.rotate(inpt, angle, interpolation=v2.InterpolationMode.BILINEAR)
        if isinstance(inpt, tv_tensors.Mask):
            return _warp(inpt, angle, 'nearest', 'zeros')
        return _warp(inpt, angle, 'bilinear', 'reflection')


class RandomLighting(v2.Transform):
    """`RandomLighting(0.05, 0.05)`: add a brightness offset uniform in [-b, b] and scale the
    contrast about the image mean by 1+u or 1/(1-u), u uniform in [-c, c] (symmetric in ratio),
    clipped to the valid range. Images (and PIXEL targets) only; masks and boxes pass through."""

    def __init__(self, b: float, c: float) -> None:
        super().__init__()
        self.b = check_number('b', b, 0, 1, 'RandomLighting(0.05, 0.05)')
        self.c = check_number('c', c, 0, 1, 'RandomLighting(0.05, 0.05)')

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        ub, uc = ((torch.rand(2) * 2 - 1) * torch.tensor([self.b, self.c])).tolist()
        return {'b': ub, 'c': 1 / (1 - uc) if uc < 0 else 1 + uc}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            return TF.to_pil_image(self.transform(TF.pil_to_tensor(inpt), params))
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt
        top = 1.0 if inpt.is_floating_point() else 255.0
        x = inpt.as_subclass(torch.Tensor).float()
        mu = x.mean()
        x = x.sub_(mu).mul_(params['c']).add_(mu + params['b'] * top).clamp_(0, top)
        x = x if inpt.is_floating_point() else x.round_().to(inpt.dtype)
        return tv_tensors.wrap(x, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else x


class RandomFlip(v2.RandomHorizontalFlip):
    """`RandomFlip()`: mirror left-right with probability p (side-on photos)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(check_number('p', p, 0, 1, 'RandomFlip(p=0.5)'))


class RandomDihedral(v2.Transform):
    """`RandomDihedral()`: one of the 8 symmetries of the square, equally likely: a rotation by
    0/90/180/270 degrees, then a left-right flip half the time (top-down photos, satellite)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        k = int(torch.randint(8, ()))
        return {'k': k % 4, 'flip': k >= 4}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        k, flip = params['k'], params['flip']
        if isinstance(inpt, (tv_tensors.BoundingBoxes, Image.Image)):
            out = TF.rotate(inpt, 90.0 * k, expand=True) if k else inpt
            return TF.horizontal_flip(out) if flip else out
        # rot90 moves whole pixels: exact, and far cheaper than resampling.
        out = torch.rot90(inpt.as_subclass(torch.Tensor), k, dims=(-2, -1))
        out = out.flip(-1) if flip else out
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _zoom(t: Any, fy: float, fx: float) -> Any:
    """`t` scaled by (fy, fx) >= 1 about its centre, cropped back to its size."""
    h, w = TF.get_size(t)
    nh, nw = max(h, round(h * fy)), max(w, round(w * fx))
    mode = v2.InterpolationMode.NEAREST if isinstance(t, tv_tensors.Mask) else \
        v2.InterpolationMode.BILINEAR
    out = TF.center_crop(TF.resize(t, [nh, nw], interpolation=mode, antialias=False), [h, w])
    return TF.clamp_bounding_boxes(out) if isinstance(out, tv_tensors.BoundingBoxes) else out


class RandomRotateZoom(v2.Transform):
    """`RandomRotateZoom(deg=10, zoom=1.1, stretch=0.1)`: one of a rotation (uniform in
    [-deg, deg]), a zoom (by 1..zoom about the centre), a stretch (one axis by 1..1+stretch) or
    nothing, drawn with probabilities `ps` (default a quarter each), as the course's transform."""

    def __init__(self, deg: float, zoom: float, stretch: float,
                 ps: Sequence[float] | None = None) -> None:
        super().__init__()
        self.deg = check_number('deg', deg, 0, 180, 'RandomRotateZoom(10, 1.1, 0.1)')
        self.zoom = check_number('zoom', zoom, 1, 10, 'RandomRotateZoom(10, 1.1, 0.1)')
        self.stretch = check_number('stretch', stretch, 0, 10, 'RandomRotateZoom(10, 1.1, 0.1)')
        ps = [0.25] * 4 if ps is None else [float(p) for p in ps]
        if len(ps) != 4 or min(ps) < 0 or abs(sum(ps) - 1) > 1e-6:
            raise ValueError(f"ps are the probabilities of rotate, zoom, stretch and nothing: "
                             f"four numbers >= 0 summing to 1, e.g. ps=[0.25, 0.25, 0.25, 0.25]; "
                             f"got {ps}")
        self.ps = ps
        self._rotate = RandomRotate(deg, p=1.0)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u = torch.rand(3).tolist()
        choice = int(np.searchsorted(np.cumsum(self.ps), u[0], side='right'))
        if choice == 0:
            return {'angle': (2 * u[1] - 1) * self.deg, 'f': (1.0, 1.0)}
        if choice == 1:
            f = 1 + (self.zoom - 1) * u[1]
            return {'angle': 0.0, 'f': (f, f)}
        if choice == 2:
            f = 1 + self.stretch * u[1]
            return {'angle': 0.0, 'f': (f, 1.0) if u[2] < 0.5 else (1.0, f)}
        return {'angle': 0.0, 'f': (1.0, 1.0)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params['angle']:
            return self._rotate.transform(inpt, params)
        return inpt if params['f'] == (1.0, 1.0) else _zoom(inpt, *params['f'])

    def __repr__(self) -> str:
        return (f'RandomRotateZoom(deg={self.deg}, zoom={self.zoom}, stretch={self.stretch}, '
                f'ps={self.ps})')


transforms_basic: list[v2.Transform] = [RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_side_on = transforms_basic + [RandomFlip()]
transforms_top_down = transforms_basic + [RandomDihedral()]
