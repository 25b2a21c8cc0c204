"""Datasets for targets that follow the image, which the data block chain builds beside
`FilesDataset`: masks (`SegmentationDataset`), and test sets of images alone beside points or
masks; and `retarget`, a copy of a `Transforms` with another size, target type or Void.

    ds = SegmentationDataset(fnames, mask_paths, val_tfms, path, classes=codes, void=11)
    x, mask = ds[0]   # mask: int64 HxW, resampled nearest-neighbour with the image
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .image_datasets import FilesDataset
from .images import open_image
from .transforms import TfmType, Transforms

__all__ = ['open_mask', 'SegmentationDataset', 'UnlabelledDataset', 'retarget', 'label_kind']


def open_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file (one class index per pixel: PNG mode 'L' or 'P') as a uint8 HxW array."""
    with Image.open(path) as im:
        if im.mode not in ('L', 'P'):
            raise ValueError(f"mask {os.fspath(path)!r} has mode {im.mode}; a mask must hold one "
                             "class index per pixel (PNG mode 'L' or 'P'), not colours")
        return np.array(im)


class SegmentationDataset(FilesDataset):
    """Images `root/fnames[i]` with masks read from `y[i]` (paths): `x, mask = ds[i]`, the mask an
    int64 HxW tensor once the transform has `tfm_y=TfmType.CLASS`. `c` is the number of codes;
    `void` the label losses and metrics ignore (None if there is none)."""

    def __init__(self, fnames: Sequence[str], masks: Sequence[str | Path], transform: Any,
                 root: str | Path, *, classes: Sequence[str], void: int | None = None):
        self.fnames, self.root, self.transform = [str(f) for f in fnames], Path(root), transform
        self.y = np.array([str(m) for m in masks], dtype=object)
        self.is_reg = self.is_multi = False
        self.is_seg = True
        self.c, self.void = len(classes), void
        if len(self.fnames) != len(self.y):
            raise ValueError(f"{len(self.fnames)} file names but {len(self.y)} masks")

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        im = open_image(self.root / self.fnames[i], getattr(self.transform, 'draft_size', None))
        mask = open_mask(self.y[i])  # full size beside a draft photo: the transform scales it
        if self.transform is None:
            return self._apply(im, mask)[0], mask.astype(np.int64)
        return self._apply(im, Image.fromarray(mask))

    def fingerprint(self) -> str:
        """The images' fingerprint, and the masks' names, sizes and times."""
        h = hashlib.sha1(super().fingerprint().encode())
        for m in self.y:
            st = os.stat(m)
            h.update(f'{m}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
        return h.hexdigest()


class UnlabelledDataset(FilesDataset):
    """A test set beside points or masks: images only, so its transforms never move a target."""

    def __init__(self, fnames: Sequence[str], transform: Any, root: Path, c: int):
        super().__init__(fnames, np.zeros(len(fnames), np.int64), no_target(transform), root,
                         c=c)

    def with_transform(self, transform: Any) -> UnlabelledDataset:
        return super().with_transform(no_target(transform))


def retarget(t: Any, **changes: Any) -> Any:
    """A copy of a `Transforms` with some arguments changed (size, tfm_y, void)."""
    if t is None or not changes:
        return t
    if not isinstance(t, Transforms):
        raise TypeError(f"transform: size= and tfm_y= rebuild fastlearn Transforms, got "
                        f"{type(t).__name__}; pass tfms=tfms_from_model(arch, sz)")
    kw = dict(sz=t.sz, stats=t.stats, is_train=t.is_train, aug_tfms=t.aug_tfms or None,
              max_zoom=t.max_zoom, pad=t.pad, crop_type=t.crop_type, tfm_y=t.tfm_y,
              sz_y=t.sz_y, void=t.void)
    kw.update(changes)
    if kw['tfm_y'] is not TfmType.CLASS:
        kw['void'] = None
    if kw['tfm_y'] not in (TfmType.PIXEL, TfmType.CLASS):
        kw['sz_y'] = None
    return Transforms(**kw)


def no_target(t: Any) -> Any:
    """`t` with `tfm_y=TfmType.NO`: for images that have no target."""
    if getattr(t, 'tfm_y', TfmType.NO) is TfmType.NO:
        return t
    return retarget(t, tfm_y=TfmType.NO)


def label_kind(raw: list, items: list[str]) -> str:
    """What label_from_func returned: classes, tags, numbers or points (all items alike)."""
    def kind(r: Any) -> str:
        if isinstance(r, str):
            return 'category'
        if isinstance(r, (bool, np.bool_)) or isinstance(r, (int, np.integer)):
            return 'category'
        if isinstance(r, (float, np.floating)):
            return 'float'
        if isinstance(r, (list, tuple, set)) and all(isinstance(t, str) for t in r):
            return 'multi'
        a = np.asarray(r)
        if a.dtype.kind in 'fiu' and a.ndim == 2 and a.shape[-1] == 2:
            return 'points'
        if a.dtype.kind in 'fiu' and a.ndim == 1:
            return 'float'
        raise ValueError(f"a {type(r).__name__} {r!r}; return a class name, a list of tags, a "
                         "number, or an (n, 2) array of (y, x) points")
    kinds = []
    for f, r in zip(items, raw):
        try:
            kinds.append(kind(r))
        except ValueError as e:
            raise ValueError(f"label_from_func: item {f} got {e}") from None
    if len(set(kinds)) > 1:
        i = kinds.index(kinds[-1])
        raise ValueError(f"label_from_func: item {items[0]} got a {kinds[0]} label but item "
                         f"{items[i]} a {kinds[i]} one; return one kind for every item")
    return kinds[0] if kinds else 'category'
