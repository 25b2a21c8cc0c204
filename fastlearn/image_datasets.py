"""The Dataset classes a loader indexes: image files by name (`FilesDataset`, the course's
`FilesIndexArrayDataset`) and numpy arrays (`ArraysDataset`: images, or the precompute cache's
features), each with its labels, its transform and its kind of task.

    ds = FilesIndexArrayDataset([fn], np.array([0]), val_tfms, PATH)
    x, y = ds[0]
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .core import to_np
from .images import open_image

__all__ = ['FilesDataset', 'FilesIndexArrayDataset', 'ArraysDataset', 'LabelledDataset', 'infer_c',
           'upright_size']


_D = TypeVar('_D', bound='LabelledDataset')


class LabelledDataset(Dataset):
    """What file and array datasets share: labels, the transform, and the task type."""

    root: Path | None  # the files' folder (FilesDataset); None for arrays

    def __init__(self, y: np.ndarray, transform: Any, c: int | None, is_reg: bool):
        y, self.transform, self.is_reg = np.asarray(y), transform, bool(is_reg)
        self.is_multi = y.ndim == 2 and not self.is_reg
        if y.ndim == 1 and not self.is_reg and y.dtype.kind == 'f' and (y % 1).any():
            raise ValueError(f"y has non-integer values (e.g. {y[(y % 1) != 0][0]}) but class "
                             "labels must be indices; pass continuous=True for regression")
        if self.is_reg and y.dtype.kind in 'fc' and not np.isfinite(y).all():
            bad = np.argwhere(~np.isfinite(y))[0]
            raise ValueError(f"y has {int((~np.isfinite(y)).sum())} non-finite value(s) (nan or "
                             f"inf; the first in row {int(bad[0])}); regression targets must be "
                             "numbers, or every loss is nan: fill them in or drop those rows")
        # Losses want int64 class indices and float32 targets, whatever the caller passed.
        self.y = y.astype(np.float32 if self.is_reg or self.is_multi else np.int64, copy=False)
        self.c = int(c if c is not None else infer_c(self.y, self.is_reg))

    @property
    def sz(self) -> int | None:
        return getattr(self.transform, 'sz', None)

    def __len__(self) -> int:
        return len(self.y)

    def with_transform(self: _D, transform: Any) -> _D:
        """A shallow copy reading the same items through `transform`."""
        ds = copy.copy(self)
        ds.transform = transform
        return ds

    def _apply(self, im: Image.Image, y: Any) -> tuple[Any, Any]:
        if self.transform is None:  # no transforms: the image as it is, uint8 CHW
            return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1), y
        return self.transform(im, y)

    def denorm(self, x: Any) -> np.ndarray:
        """A CHW or NCHW batch back to HWC/NHWC numpy in [0, 1], for plotting."""
        if self.transform is not None:
            return self.transform.denorm(x)
        x = to_np(x)
        return np.moveaxis(x, -3, -1).astype(np.float32) / 255.0


def infer_c(y: np.ndarray, is_reg: bool) -> int:
    """The number of outputs labels `y` ask for: tags per row, 1 for regression, else the
    highest class index plus one."""
    if y.ndim == 2:
        return y.shape[1]
    return 1 if is_reg else int(y.max()) + 1 if len(y) else 0


class FilesDataset(LabelledDataset):
    """Images read from `root/fnames[i]` with labels `y[i]`, through `transform`.

    `fnames` are relative to `root` ('train/cats/cat.1.jpg'). Picklable, so loader workers
    started by fork or spawn both work.
    """

    root: Path
    src_root: Path | None = None  # set by with_root: where coordinates were taken

    def __init__(self, fnames: Sequence[str], y: np.ndarray, transform: Any, root: str | Path, *,
                 c: int | None = None, is_reg: bool = False):
        super().__init__(y, transform, c, is_reg)
        self.fnames, self.root = [str(f) for f in fnames], Path(root)
        if len(self.fnames) != len(self.y):
            raise ValueError(f"{len(self.fnames)} file names but {len(self.y)} labels")

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        im = open_image(self.root / self.fnames[i], getattr(self.transform, 'draft_size', None))
        return self._apply(im, _coords_with_decode(self.y[i], im, self.transform,
                                                   getattr(self, 'src_root', None), self.fnames[i]))

    def fingerprint(self) -> str:
        """sha1 of each file's relative name, size, mtime, ctime and inode, and of the labels: it
        changes when a file is added, removed, touched, replaced or relabelled.

        ctime and the inode come with the same `stat` call: no tool can set ctime back, so a file
        rewritten in place with its size and mtime restored still changes the key. Hashing the
        contents would cost 5-50x more per fit (docs/precompute.md has the figures)."""
        h = hashlib.sha1()
        for f in self.fnames:
            st = os.stat(self.root / f)
            # surrogateescape: a name that is not UTF-8 (a Windows zip) is still its bytes
            h.update(f'{f}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n'
                     .encode('utf-8', 'surrogateescape'))
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()

    def with_root(self, root: Path, drop: set[str] | frozenset[str] = frozenset()) -> 'FilesDataset':
        """The same items read from another folder (a resized copy), less the names in `drop`."""
        keep = [i for i, f in enumerate(self.fnames) if f not in drop]
        ds = copy.copy(self)
        ds.root, ds.fnames, ds.y = Path(root), [self.fnames[i] for i in keep], self.y[keep]
        ds.src_root = getattr(self, 'src_root', None) or self.root  # where coordinates were taken
        return ds

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({len(self)} files under {self.root}, '
                f'transform={self.transform!r})')


class FilesIndexArrayDataset(FilesDataset):
    """The course's name for files with one class index each, as in its single-image
    prediction:

        ds = FilesIndexArrayDataset([fn], np.array([0]), val_tfms, PATH)
        preds = learn.predict_dl(DataLoader(ds))
    """

    def __init__(self, fnames: Sequence[str], y: np.ndarray, transform: Any, path: str | Path, *,
                 c: int | None = None) -> None:
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype.kind not in 'iu':
            raise ValueError(f"FilesIndexArrayDataset takes one integer class index per file, e.g. "
                             f"np.array([0]); got y of shape {y.shape} and dtype {y.dtype}")
        super().__init__(fnames, y, transform, path, c=c)


def _coords_with_decode(y: Any, im: Image.Image, transform: Any, src_root: Path | None,
                        fname: str) -> Any:
    """Coordinate targets (boxes, points: y x pairs) scaled from the full-size photo's pixels to
    the reduced-size decode's, so they stay on the image (`TfmType.COORD`; other targets pass).
    After `resize`, the full size is the original file's (`src_root`), not the copy's."""
    if getattr(getattr(transform, 'tfm_y', None), 'name', None) != 'COORD':
        return y
    sy, sx = im.info.get('draft_scale', (1.0, 1.0))
    if src_root is not None:
        h, w = upright_size(src_root / fname)
        sy, sx = im.height / h, im.width / w
    if sy == sx == 1.0:
        return y
    a = np.array(y, dtype=np.float32)
    return (a.reshape(-1, 2) * np.array([sy, sx], np.float32)).reshape(a.shape)


def upright_size(path: Path) -> tuple[int, int]:
    """(h, w) of an image file as `open_image` turns it upright, from its header alone."""
    with Image.open(path) as im:
        w, h = im.size
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF: a quarter turn
    return (w, h) if turned else (h, w)


class ArraysDataset(LabelledDataset):
    """Items from numpy arrays: images `(N, H, W[, C])` (uint8, or float in 0..1 or 0..255) go
    through `transform` as PIL images; feature vectors `(N, F)` come back unchanged as tensors
    (the precompute cache). `fnames` and `root` are None: there are no files."""
    fnames, root = None, None

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any = None, *,
                 c: int | None = None, is_reg: bool = False):
        super().__init__(y, transform, c, is_reg)
        x = np.asarray(x)
        if x.ndim not in (2, 3, 4) or len(x) != len(self.y):
            raise ValueError(f"x must be (N, F) features or (N, H, W[, C]) images with N = "
                             f"{len(self.y)} labels, got shape {x.shape}")
        self.x, self.is_features = x, x.ndim == 2
        self._x255 = (255.0 if x.dtype.kind == 'f' and not self.is_features and x.size
                      and float(x.max()) <= 1.0 else 1.0)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        if self.is_features:
            return torch.from_numpy(np.ascontiguousarray(self.x[i])), self.y[i]
        a = self.x[i]
        if a.dtype != np.uint8:
            a = np.clip(a * self._x255, 0, 255).astype(np.uint8)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        return self._apply(Image.fromarray(a).convert('RGB'), self.y[i])

    def fingerprint(self) -> str:
        """sha1 of the arrays' shapes, types and bytes."""
        h = hashlib.sha1()
        for a in (self.x, self.y):
            h.update(f'{a.shape}{a.dtype}'.encode())
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(x {self.x.shape} {self.x.dtype}, '
                f'transform={self.transform!r})')
