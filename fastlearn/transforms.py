"""Image transforms the course's way: `tfms_from_model(arch, sz, ...)` gives a training and a
validation pipeline, built on torchvision transforms v2 so masks, target images and boxes share
the image's random draw.

Speed comes from working small and in uint8: the decoded image is resized first (torch's
antialiased uint8 kernel, several times faster than PIL's), the random geometry runs on that small
image, and only the final sz x sz crop is turned into normalised floats.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .augmentations import (RandomDihedral, RandomFlip, RandomLighting, RandomRotate, RandomRotateZoom,
                            check_number, transforms_basic, transforms_side_on, transforms_top_down)
from .core import to_np
from .stats import Stats, check_stats, imagenet_stats, inception_stats, model_stats
from .targets import as_boxes, as_mask, as_points, coords_out, is_points

__all__ = ['imagenet_stats', 'inception_stats', 'CropType', 'TfmType', 'RandomRotate',
           'RandomRotateZoom', 'RandomLighting', 'RandomFlip', 'RandomDihedral', 'transforms_basic',
           'transforms_side_on', 'transforms_top_down', 'Transforms', 'tfms_from_stats',
           'tfms_from_model']

# RandomResizedCrop's range, as in the GoogLeNet paper and torchvision.
_RRC_SCALE, _RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


class CropType(IntEnum):
    """How the sz x sz square is cut: RANDOM (random on train, centre on valid), CENTER,
    NO (squash the whole image), RANDOM_RESIZED (random area and aspect on train; the
    course's GOOGLENET, kept as an alias)."""
    RANDOM = 1
    CENTER = 2
    NO = 3
    RANDOM_RESIZED = 4
    GOOGLENET = 4


class TfmType(IntEnum):
    """What `y` is: NO (a label, untouched), PIXEL (an image), COORD (boxes, or (y, x) points:
    see `targets`), CLASS (a mask)."""
    NO = 1
    PIXEL = 2
    COORD = 3
    CLASS = 4


def _check_size(name: str, sz: Any, example: str, *, optional: bool = False) -> Any:
    """`sz` as a positive int (square) or an `(h, w)` pair of positive ints."""
    if sz is None and optional:
        return None
    if isinstance(sz, (tuple, list)) and len(sz) == 2:
        return tuple(check_number(name, v, 1, math.inf, example, integer=True) for v in sz)
    if isinstance(sz, (tuple, list)):
        raise ValueError(f"{name} must be an int or an (h, w) pair; got {sz!r}. Pass e.g. {example}")
    return check_number(name, sz, 1, math.inf, example, integer=True)


def _hw(sz: int | tuple[int, int]) -> tuple[int, int]:
    return sz if isinstance(sz, tuple) else (sz, sz)


def _check_enum(name: str, value: Any, enum: type, example: str) -> Any:
    if not isinstance(value, enum):
        raise TypeError(f"{name} must be a {enum.__name__}; got {value!r}. Pass e.g. {example}")
    return value


# ---------------------------------------------------------------------------- the pipeline

def _describe(t: Any) -> str:
    """One line naming a transform and its parameters, free of memory addresses (the repr is
    part of a cache key)."""
    if hasattr(t, '__qualname__') and not isinstance(t, torch.nn.Module):
        code = getattr(t, '__code__', None)  # tells apart lambdas that share a qualname
        return f"{t.__module__}.{t.__qualname__}" + (f':{code.co_firstlineno}' if code else '')
    if type(t).__repr__ is object.__repr__:
        params = ', '.join(f'{k}={v!r}' for k, v in sorted(vars(t).items()))
        text = f'{type(t).__qualname__}({params})'
    else:
        text = repr(t)
    return re.sub(r' at 0x[0-9a-fA-F]+', '', ' '.join(text.split()))


def _as_image(im: Any, what: str = 'im') -> tv_tensors.Image:
    if isinstance(im, np.ndarray) and im.dtype.kind == 'f' and im.ndim in (2, 3):
        # the course's open_image gave float HWC arrays in [0, 1]
        if im.size and (float(im.min()) < -1e-6 or float(im.max()) > 1 + 1e-6):
            raise ValueError(f"a float {what} must hold values in [0, 1] (as the course's "
                             f"open_image gave); got {float(im.min()):g}..{float(im.max()):g}. "
                             f"Divide by 255, or pass a uint8 array")
        im = (np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8)
    if isinstance(im, np.ndarray) and im.dtype == np.uint8:
        im = Image.fromarray(im)
    if not isinstance(im, Image.Image):
        raise TypeError(f"{what} must be a PIL image (or a uint8 or [0, 1] float HWC array); got "
                        f"{type(im).__name__}. Open files with open_image(path)")
    if im.mode != 'RGB':  # grayscale, palette, RGBA, CMYK: the models expect 3 channels
        im = im.convert('RGB')
    return tv_tensors.Image(TF.pil_to_tensor(im))


def _resize_to(t: Any, box: tuple[int, int, int, int], ref: tuple[int, int],
               size: list[int]) -> Any:
    """Crop `box` (top, left, height, width in the image's pixels, `ref` = its HxW) from `t`
    and resize to `size`. A target stored at another resolution (a high-res PIXEL target, a
    full-size mask beside a draft-decoded photo) gets the same box scaled to its own pixels."""
    if t is None:
        return None
    hw = ref if isinstance(t, tv_tensors.BoundingBoxes) else tuple(t.shape[-2:])
    if hw != ref:
        fy, fx = hw[0] / ref[0], hw[1] / ref[1]
        box = (round(box[0] * fy), round(box[1] * fx), round(box[2] * fy), round(box[3] * fx))
    if box != (0, 0, *hw):
        t = TF.crop(t, *box)  # a view: the resize below is the only pass over the pixels
    # nearest-exact samples pixel centres like the image's bilinear kernel; NEAREST is off by half.
    mode = (v2.InterpolationMode.NEAREST_EXACT if isinstance(t, tv_tensors.Mask)
            else v2.InterpolationMode.BILINEAR)
    return TF.resize(t, size, interpolation=mode, antialias=True)


def _check_tfms(aug_tfms: Any) -> list[Callable]:
    if aug_tfms is None:
        return []
    tfms = list(aug_tfms) if isinstance(aug_tfms, (list, tuple)) else [aug_tfms]
    for i, t in enumerate(tfms):
        if not callable(t):
            raise TypeError(f"aug_tfms[{i}] must be a v2 transform or a callable on tv_tensors; "
                            f"got {type(t).__name__} {t!r}. Pass e.g. aug_tfms=transforms_side_on")
    return tfms


# The course passed OpenCV's border codes; torchvision names the same fills.
_CV2_PAD = {0: 'constant', 1: 'edge', 2: 'symmetric', 4: 'reflect'}


def _pad_mode(mode: Any) -> str:
    name = _CV2_PAD.get(mode, mode) if isinstance(mode, int) else mode
    if name not in ('constant', 'edge', 'reflect', 'symmetric'):
        raise ValueError(f"pad_mode must be 'reflect', 'symmetric', 'edge', 'constant' or one of "
                         f"the course's cv2 codes {sorted(_CV2_PAD)}; got {mode!r}")
    return name


class Transforms:
    """`trn_tfms, val_tfms = tfms_from_model(resnet34, 224, aug_tfms=transforms_side_on)`, then
    `x, y = trn_tfms(im, y)`: a PIL image to a normalised float32 CHW tensor of sz x sz
    (`sz=(h, w)` gives h x w: the image is resized to cover h x w, then cropped).

    Steps: resize the shorter side to sz (times a random zoom on train), squash to a square
    (CropType.NO) or cut a random area (RANDOM_RESIZED, train); reflect-pad by `pad`; the
    `aug_tfms` (train only); crop sz x sz; normalise. Validation (`is_train=False`) has no zoom,
    pad or augmentation, and crops the centre, so RANDOM and RANDOM_RESIZED are stored as CENTER.
    With zoom or pad, CropType.NO also crops its margin away (at random on train).

    `tfm_y` says what `y` is and how it follows the image (one random draw for both): NO leaves it
    untouched; PIXEL (an image) is transformed and normalised like x; CLASS (a PIL 'L'/'P' mask
    or integer array) comes back as an int64 HxW tensor, resampled nearest-neighbour, and with
    `void` set, pixels the augmentation invents (a rotation's corners, a crop past the border)
    get `void` (CamVid's Void is 11) instead of 0; COORD boxes `(n, 4)` as (top, left, bottom,
    right), or points `(n, 2)` as (y, x), in pixels of the image passed in (scale them if it was
    decoded at reduced size; the datasets do) come back in the output's pixels, boxes clipped
    to it, points kept even outside it (see `targets`).
    RandomDihedral turns a non-square image on its side: use it with square sizes.
    `sz_y` gives a PIXEL or CLASS target another size: both are processed at the larger size
    and the other one is resized down at the end.
    """

    def __init__(self, sz: int | tuple[int, int], stats: Stats = imagenet_stats, *,
                 is_train: bool = True, aug_tfms: Sequence[Callable] | Callable | None = None,
                 max_zoom: float | None = None, pad: int = 0,
                 crop_type: CropType = CropType.RANDOM, tfm_y: TfmType | None = None,
                 sz_y: int | tuple[int, int] | None = None, pad_mode: str | int = 'reflect',
                 norm_y: bool = True, scale: Sequence[Callable] | Callable | None = None,
                 void: int | None = None) -> None:
        self.pad_mode = _pad_mode(pad_mode)
        self.norm_y = bool(norm_y)
        self.scale = _check_tfms(scale)
        self.sz = _check_size('sz', sz, 'sz=224 or sz=(360, 480)')
        self.sz_y = _check_size('sz_y', sz_y, 'sz_y=448', optional=True)
        self.void = check_number('void', void, 0, 255, 'void=11', integer=True, optional=True)
        self.stats = check_stats(stats)
        self.crop_type = _check_enum('crop_type', crop_type, CropType, 'crop_type=CropType.CENTER')
        self.tfm_y = _check_enum('tfm_y', TfmType.NO if tfm_y is None else tfm_y, TfmType,
                                 'tfm_y=TfmType.CLASS')
        self.is_train = bool(is_train)
        self.aug_tfms = _check_tfms(aug_tfms)
        self.max_zoom = check_number('max_zoom', max_zoom, 1, 10, 'max_zoom=1.1', optional=True)
        self.pad = check_number('pad', pad, 0, math.inf, 'pad=4', integer=True)
        if self.sz_y is not None and self.tfm_y not in (TfmType.PIXEL, TfmType.CLASS):
            raise ValueError(f"sz_y sizes a PIXEL or CLASS target, but tfm_y is "
                             f"TfmType.{self.tfm_y.name}; got sz_y={sz_y!r}. "
                             f"Leave sz_y out or pass tfm_y=TfmType.PIXEL")
        if not self.is_train and (self.aug_tfms or self.max_zoom is not None or self.pad):
            raise ValueError(f"aug_tfms, max_zoom and pad apply to training only; is_train=False "
                             f"got aug_tfms={aug_tfms!r}, max_zoom={max_zoom!r}, pad={pad!r}. "
                             f"Leave them out")
        if not self.is_train and self.crop_type in (CropType.RANDOM, CropType.RANDOM_RESIZED):
            self.crop_type = CropType.CENTER  # what valid does with them: keeps reprs honest
        if self.void is not None and self.tfm_y is not TfmType.CLASS:
            raise ValueError(f"void fills a CLASS target (a mask), but tfm_y is "
                             f"TfmType.{self.tfm_y.name}; got void={void!r}. Leave void out or "
                             f"pass tfm_y=TfmType.CLASS")
        # one size for x and y, the larger: one shared draw
        self._work = max(_hw(self.sz), _hw(self.sz_y or self.sz), key=lambda t: t[0] * t[1])
        self._pad = round(self.pad * self._work[0] / _hw(self.sz)[0])
        self._rrc = v2.RandomResizedCrop(self._work, scale=_RRC_SCALE, ratio=_RRC_RATIO)
        mean, std = (torch.tensor(v).view(-1, 1, 1) for v in self.stats)
        self._inv_std, self._offset = 1 / std, -mean / std

    @property
    def draft_size(self) -> int:
        """The smallest shorter side the decoded image must keep so that nothing is upsampled:
        sz (or sz_y; the longer side of an (h, w) size), times max_zoom on train; for RANDOM_RESIZED on train,
        divided by the
        smallest crop's share of the side (sqrt(0.08 * 3/4) ~ 0.245 of a square image)."""
        work = max(self._work)  # either side of the photo may have to cover it
        side = work * (self.max_zoom or 1.0) if self.is_train else float(work)
        if self.is_train and self.crop_type is CropType.RANDOM_RESIZED:
            side /= math.sqrt(_RRC_SCALE[0] * _RRC_RATIO[0])
        return math.ceil(side - 1e-9)

    @overload
    def __call__(self, im: Image.Image, y: None = None) -> torch.Tensor: ...
    @overload
    def __call__(self, im: Image.Image, y: Any) -> tuple[torch.Tensor, Any]: ...

    def __call__(self, im: Image.Image, y: Any = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """`x = val_tfms(im)` as in the course, or `x, y = trn_tfms(im, y)` with a target."""
        x = _as_image(im)
        tgt = self._target(y, tuple(x.shape[-2:]))
        x, tgt = self._resize(x, tgt)
        shift = self.void is not None and isinstance(tgt, tv_tensors.Mask)
        if shift:  # labels 1.., so the 0 that padding and rotation bring in marks Void
            tgt = tv_tensors.wrap(tgt.as_subclass(torch.Tensor).to(torch.int32) + 1, like=tgt)
        if self.is_train:
            x, tgt = self._augment(x, tgt)
        x, tgt = self._crop(x, tgt)
        if shift:
            m = tgt.as_subclass(torch.Tensor)
            tgt = tv_tensors.wrap(torch.where(m == 0, self.void, m - 1), like=tgt)
        x, y_out = self._finish(x, tgt, y)
        return x if y is None else (x, y_out)

    def _target(self, y: Any, size: tuple[int, int]) -> Any:
        if self.tfm_y is TfmType.NO:
            return None
        if y is None:
            raise ValueError(f"tfm_y=TfmType.{self.tfm_y.name} transforms y with the image, but "
                             f"y is None. Pass the target, or tfm_y=None for labels")
        if self.tfm_y is TfmType.PIXEL:
            return _as_image(y, 'y')
        if self.tfm_y is TfmType.CLASS:
            return as_mask(y)
        return as_points(y, size) if is_points(y) else as_boxes(y, size)

    def _resize(self, x: tv_tensors.Image, tgt: Any) -> tuple[Any, Any]:
        if self.scale:  # the caller's own scaling replaces the shorter-side resize
            sample = x if tgt is None else (x, tgt)
            for t in self.scale:
                sample = t(sample)
            return (sample, None) if tgt is None else sample
        h, w = x.shape[-2:]
        th, tw = self._work
        if self.is_train and self.max_zoom is not None and float(torch.rand(())) < 0.75:
            zoom = 1 + (self.max_zoom - 1) * float(torch.rand(()))
            th, tw = int(th * zoom), int(tw * zoom)
        box = (0, 0, h, w)
        if self.is_train and self.crop_type is CropType.RANDOM_RESIZED:
            p = self._rrc.make_params([x])
            box = (p['top'], p['left'], p['height'], p['width'])
            size = [th, tw]
        elif self.crop_type is CropType.NO:
            size = [th, tw]
        else:  # cover th x tw, aspect kept (floored, never below th x tw)
            size = [th, max(tw, w * th // h)] if th * w >= tw * h else [max(th, h * tw // w), tw]
        return _resize_to(x, box, (h, w), size), _resize_to(tgt, box, (h, w), size)

    def _augment(self, x: Any, tgt: Any) -> tuple[Any, Any]:
        if self._pad:
            x = TF.pad(x, [self._pad], padding_mode=self.pad_mode)
            if tgt is not None:  # a mirrored border carries mirrored labels; boxes just shift
                mode = 'constant' if isinstance(tgt, tv_tensors.BoundingBoxes) else self.pad_mode
                tgt = TF.pad(tgt, [self._pad], padding_mode=mode)
        sample = x if tgt is None else (x, tgt)
        for t in self.aug_tfms:
            sample = t(sample)
        return (sample, None) if tgt is None else sample

    def _crop(self, x: Any, tgt: Any) -> tuple[Any, Any]:
        (h, w), (nh, nw) = x.shape[-2:], self._work
        if (h, w) == (nh, nw):
            return x, tgt
        if self.is_train and self.crop_type is not CropType.CENTER:
            top, left = (int(torch.randint(max(d - n, 0) + 1, ())) for d, n in ((h, nh), (w, nw)))
        else:  # torchvision's centre, so valid crops match v2.CenterCrop exactly
            top, left = int(round((h - nh) / 2.0)), int(round((w - nw) / 2.0))
        return (TF.crop(x, top, left, nh, nw),
                None if tgt is None else TF.crop(tgt, top, left, nh, nw))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.as_subclass(torch.Tensor)
        if x.is_floating_point():  # a custom augmentation already gave floats in [0, 1]
            return torch.addcmul(self._offset, x.float(), self._inv_std).contiguous()
        # one fused pass on the small crop: (x/255 - mean)/std
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        return x.mul_(self._inv_std / 255).add_(self._offset)

    def _finish(self, x: Any, tgt: Any, y: Any) -> tuple[torch.Tensor, Any]:
        if self._work != _hw(self.sz):
            x = TF.resize(x, list(_hw(self.sz)), antialias=True)
        x = self._normalise(x)
        if self.tfm_y is TfmType.NO:
            return x, y
        if isinstance(tgt, tv_tensors.BoundingBoxes):
            return x, coords_out(tgt, is_points(y))
        if self.sz_y is not None and self._work != _hw(self.sz_y):
            tgt = _resize_to(tgt, (0, 0, *self._work), self._work, list(_hw(self.sz_y)))
        if isinstance(tgt, tv_tensors.Mask):
            mask = tgt.as_subclass(torch.Tensor)[0]
            return x, mask.to(torch.int64, memory_format=torch.contiguous_format)
        if not self.norm_y:  # a PIXEL target kept in [0, 1]
            return x, tgt.as_subclass(torch.Tensor).to(torch.float32).div_(255)
        return x, self._normalise(tgt)

    def denorm(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """`data.val_ds.denorm(x)`: a normalised CHW or NCHW batch back to HWC/NHWC floats in
        [0, 1], for plotting."""
        a = to_np(x).astype(np.float32)
        n = len(self.stats[0])
        if a.ndim not in (3, 4) or a.shape[-3] != n:
            raise ValueError(f"denorm needs a CHW or NCHW array with {n} channels; "
                             f"got shape {a.shape}")
        a = np.moveaxis(a, -3, -1) * np.array(self.stats[1], np.float32) + np.array(self.stats[0], np.float32)
        return np.clip(a, 0, 1).astype(np.float32)

    def __repr__(self) -> str:
        stats = ', '.join('(' + ', '.join(f'{v:.6g}' for v in s) + ')' for s in self.stats)
        augs = ', '.join(_describe(t) for t in self.aug_tfms)
        void = '' if self.void is None else f", void={self.void}"  # older cache keys unchanged
        return (f"Transforms(sz={self.sz}, sz_y={self.sz_y}{void}, is_train={self.is_train}, "
                f"crop_type=CropType.{self.crop_type.name}, tfm_y=TfmType.{self.tfm_y.name}, "
                f"max_zoom={self.max_zoom}, pad={self.pad}, stats=({stats}), aug_tfms=[{augs}]"
                f"{self._extra_repr()})")

    def _extra_repr(self) -> str:
        # only what differs from the defaults, so caches keyed by older reprs stay valid
        extra = [f'pad_mode={self.pad_mode!r}'] if self.pad_mode != 'reflect' else []
        extra += [] if self.norm_y else ['norm_y=False']
        if self.scale:
            extra.append('scale=[' + ', '.join(_describe(t) for t in self.scale) + ']')
        return ''.join(', ' + e for e in extra)


# --------------------------------------------------------------------------- entry points

def tfms_from_stats(stats: Stats, sz: int | tuple[int, int], aug_tfms: Sequence[Callable] | Callable | None = None,
                    max_zoom: float | None = None, *, pad: int = 0,
                    crop_type: CropType = CropType.RANDOM, tfm_y: TfmType | None = None,
                    sz_y: int | tuple[int, int] | None = None, pad_mode: str | int = 'reflect',
                    norm_y: bool = True, scale: Sequence[Callable] | Callable | None = None,
                    void: int | None = None
                    ) -> tuple[Transforms, Transforms]:
    """`tfms_from_stats(imagenet_stats, 224, aug_tfms=transforms_side_on, max_zoom=1.1)`:
    `(trn_tfms, val_tfms)` normalising with `stats = (mean, std)`. The validation pipeline gets
    no augmentation, zoom or pad, and crops the centre (or squashes, for CropType.NO).
    `pad_mode` fills the `pad` border ('reflect', 'symmetric', 'edge', 'constant' or the
    course's cv2 codes 0, 1, 2, 4); `norm_y=False` keeps a PIXEL target in [0, 1] instead of
    normalising it; `scale` (transforms taking the image, or `(image, target)`) replaces the
    shorter-side resize, on train and valid alike. `sz=(h, w)` gives non-square images (CamVid:
    `(360, 480)`); `void=11` fills the pixels a mask (`tfm_y=TfmType.CLASS`) gains from rotation
    or cropping with that label."""
    common: dict[str, Any] = dict(crop_type=crop_type, tfm_y=tfm_y, sz_y=sz_y, pad_mode=pad_mode, norm_y=norm_y,
                  scale=scale, void=void)
    trn = Transforms(sz, stats, is_train=True, aug_tfms=aug_tfms, max_zoom=max_zoom, pad=pad,
                     **common)
    val = Transforms(sz, stats, is_train=False, **common)
    return trn, val


def tfms_from_model(f_model: Any, sz: int | tuple[int, int], aug_tfms: Sequence[Callable] | Callable | None = None,
                    max_zoom: float | None = None, *, pad: int = 0,
                    crop_type: CropType = CropType.RANDOM, tfm_y: TfmType | None = None,
                    sz_y: int | tuple[int, int] | None = None, pad_mode: str | int = 'reflect',
                    norm_y: bool = True, scale: Sequence[Callable] | Callable | None = None,
                    void: int | None = None
                    ) -> tuple[Transforms, Transforms]:
    """`tfms_from_model(resnet34, 224, aug_tfms=transforms_side_on, max_zoom=1.1)`: as
    `tfms_from_stats`, with the statistics the model was trained with (see `model_stats`)."""
    return tfms_from_stats(model_stats(f_model), sz, aug_tfms, max_zoom, pad=pad,
                           crop_type=crop_type, tfm_y=tfm_y, sz_y=sz_y, pad_mode=pad_mode,
                           norm_y=norm_y, scale=scale, void=void)
