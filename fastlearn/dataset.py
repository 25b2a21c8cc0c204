"""Data for image classifiers: folders, CSVs and arrays into `ImageClassifierData` and its six
loaders.

    tfms = tfms_from_model(resnet34, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(PATH, tfms=tfms)
    x, y = next(iter(data.val_dl))

Opening and checking a file lives in `images.py`, finding a data set's files in `sources.py`,
the Dataset classes (files, arrays) in `image_datasets.py`.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .core import default_num_workers, num_cpus
from .csv_labels import csv_check_split, csv_labels, csv_val_idxs, parse_csv_labels
from .images import BadImageError, open_image
from .loader import Loader, seed_worker
from .resize import resize_dest, resize_one
from .sources import csv_files, folder_source, layout_hint, scan_test_folder, screen_files
from .image_datasets import (ArraysDataset, FilesDataset, FilesIndexArrayDataset, LabelledDataset,
                             infer_c)
from .show import show_batch

__all__ = ['ImageClassifierData', 'FilesDataset', 'FilesIndexArrayDataset', 'ArraysDataset',
           'get_cv_idxs', 'open_image', 'folder_source', 'parse_csv_labels', 'BadImageError',
           'DataLoader']

Tfms = tuple[Any, Any]


def get_cv_idxs(n: int, cv_idx: int = 0, val_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """Indices of a random validation set: fold `cv_idx` of size `int(val_pct*n)`.

        val_idxs = get_cv_idxs(n)

    Deterministic for a given seed, and the same indices as the course's version; numpy's global
    random state is left alone (the course's version reseeded it).
    """
    if not 0 < val_pct < 1:
        raise ValueError(f"val_pct must be between 0 and 1 (a fraction of the rows), got {val_pct}")
    n_val = int(val_pct * n)
    if not 0 <= cv_idx < max(1, int(1 / val_pct)):
        raise ValueError(f"cv_idx must be in 0..{int(1 / val_pct) - 1} for val_pct={val_pct}, "
                         f"got {cv_idx}")
    idxs = np.random.RandomState(seed).permutation(n)
    return idxs[cv_idx * n_val:(cv_idx + 1) * n_val]


def _check_tfms(tfms: Any) -> Tfms:
    if not (isinstance(tfms, (tuple, list)) and len(tfms) == 2):
        raise ValueError(f"tfms must be a (train, valid) pair, as tfms_from_model(arch, sz) "
                         f"returns; got {type(tfms).__name__}: pass tfms=tfms_from_model(...)")
    return tfms[0], tfms[1]


def _check_val_classes_trained(trn_y: np.ndarray, val_y: np.ndarray,
                               classes: Sequence[str] | None) -> None:
    """A class that has validation examples but no training one would be an output that
    training never sees as positive: refused, as `from_paths` and `from_csv` do."""
    if trn_y.ndim == 2 and val_y.ndim == 2 and trn_y.shape[1] == val_y.shape[1]:
        unseen = np.flatnonzero((val_y > 0).any(0) & ~(trn_y > 0).any(0)).tolist()
    elif trn_y.ndim == 1 and val_y.ndim == 1 and val_y.dtype.kind in 'iub':
        unseen = sorted(set(val_y.tolist()) - set(trn_y.tolist()))
    else:
        return
    if unseen:
        names = [classes[i] for i in unseen if 0 <= i < len(classes)] if classes is not None else []
        raise ValueError(f"class(es) {unseen[:10]}{f' ({names[:10]})' if names else ''} have "
                         "validation examples but no training example, so training never sees "
                         "them; move some of their examples to trn, or drop them from val")


def _subset(fnames: list[str], y: np.ndarray, drop: set[str]) -> tuple[list[str], np.ndarray]:
    keep = [i for i, f in enumerate(fnames) if f not in drop]
    return [fnames[i] for i in keep], y[keep]


class ImageClassifierData:
    """Train, valid and optional test datasets, with the course's six loaders.

        data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet34, 224))
        data = ImageClassifierData.from_csv(PATH, 'train', f'{PATH}labels.csv', tfms=tfms,
                                            val_idxs=get_cv_idxs(n), suffix='.jpg')

    | loader | items | transforms | shuffled |
    |---|---|---|---|
    | `trn_dl` | train | train | yes (drops a last batch of 1: BatchNorm fails on it) |
    | `val_dl` | valid | valid | no |
    | `fix_dl` | train | valid | no (what precompute reads) |
    | `aug_dl` | valid | train | no (what TTA reads) |
    | `test_dl`, `test_aug_dl` | test | valid, train | no |

    Loaders run `num_workers` processes (default `core.default_num_workers()`), kept alive
    between epochs. `pin_memory` is on only when CUDA is present: on a CPU it is a wasted copy.
    `path` is where `tmp/` and `models/` go; it stays put after `resize`.
    """

    def __init__(self, path: str | os.PathLike, trn_ds: LabelledDataset, val_ds: LabelledDataset,
                 test_ds: LabelledDataset | None = None, *, bs: int = 64,
                 num_workers: int | None = None, classes: Sequence[str] | None = None):
        if int(bs) < 1:
            raise ValueError(f"bs (batch size) must be at least 1, got {bs}")
        self.path, self.bs = Path(path), int(bs)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.classes = list(classes) if classes is not None else None
        self.trn_ds, self.val_ds, self.test_ds = trn_ds, val_ds, test_ds
        self.fix_ds = trn_ds.with_transform(val_ds.transform)
        self.aug_ds = val_ds.with_transform(trn_ds.transform)
        self.test_aug_ds = test_ds.with_transform(trn_ds.transform) if test_ds is not None else None

    @property
    def c(self) -> int:
        """Number of outputs: classes, or regression targets."""
        return self.trn_ds.c

    @property
    def sz(self) -> int | None:
        """Image size the transforms produce (None without transforms)."""
        return self.trn_ds.sz

    @property
    def is_multi(self) -> bool:
        """Multi-label: n-hot float targets, sigmoid outputs."""
        return self.trn_ds.is_multi

    @property
    def is_reg(self) -> bool:
        """Regression: float targets."""
        return self.trn_ds.is_reg

    @property
    def is_seg(self) -> bool:
        """Segmentation: a mask per image, one class per pixel (scores on axis 1)."""
        return bool(getattr(self.trn_ds, 'is_seg', False))

    @property
    def void(self) -> int | None:
        """The mask label that losses and metrics ignore (CamVid's Void, 11), or None."""
        return getattr(self.trn_ds, 'void', None)

    @property
    def trn_y(self) -> np.ndarray:
        """Training labels, in `trn_ds.fnames` order."""
        return self.trn_ds.y

    @property
    def val_y(self) -> np.ndarray:
        """Validation labels, in `val_ds.fnames` order (what predictions line up with)."""
        return self.val_ds.y

    @overload
    def get_dl(self, ds: Dataset, shuffle: bool) -> DataLoader: ...
    @overload
    def get_dl(self, ds: None, shuffle: bool) -> None: ...

    def get_dl(self, ds: Dataset | None, shuffle: bool) -> DataLoader | None:
        """A loader over `ds` with this data's batch size and workers. Shuffled loaders drop a
        last batch of exactly one item. In-memory feature arrays load in-process (workers would
        only add copying)."""
        if ds is None:
            return None
        workers = 0 if getattr(ds, 'is_features', False) else self.num_workers
        return Loader(ds, batch_size=self.bs, shuffle=shuffle, num_workers=workers,
                      collate_fn=default_collate, pin_memory=torch.cuda.is_available(),
                      drop_last=shuffle and len(ds) > 1 and len(ds) % self.bs == 1,  # type: ignore[arg-type]  # Dataset's type: no __len__
                      persistent_workers=workers > 0,
                      worker_init_fn=seed_worker if workers > 0 else None)

    # Built on first use; workers start on first iteration and then persist across epochs.
    @cached_property
    def trn_dl(self) -> DataLoader:
        return self.get_dl(self.trn_ds, True)

    @cached_property
    def val_dl(self) -> DataLoader:
        return self.get_dl(self.val_ds, False)

    @cached_property
    def fix_dl(self) -> DataLoader:
        return self.get_dl(self.fix_ds, False)

    @cached_property
    def aug_dl(self) -> DataLoader:
        return self.get_dl(self.aug_ds, False)

    @cached_property
    def test_dl(self) -> DataLoader | None:
        return self.get_dl(self.test_ds, False)

    @cached_property
    def test_aug_dl(self) -> DataLoader | None:
        return self.get_dl(self.test_aug_ds, False)

    @classmethod
    def from_paths(cls, path: str | os.PathLike, bs: int = 64, tfms: Tfms = (None, None),
                   trn_name: str = 'train', val_name: str = 'valid', test_name: str | None = None,
                   test_with_labels: bool = False, num_workers: int | None = None, *,
                   on_bad_file: str = 'skip', check_images: bool = False) -> 'ImageClassifierData':
        """Data from one folder per class.

            data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(arch, sz))

        Layout: `path/train/<class>/<image>`, `path/valid/<class>/<image>`, and optionally a flat
        `path/<test_name>/<image>` (labels all 0) or, with `test_with_labels`, one folder per
        class. Classes are the training sub-folders, sorted; every split uses that one index,
        and a class folder in valid or test that train lacks is an error. An empty class folder
        is a warning (the class keeps its index). Hidden files and folders are ignored.

        `on_bad_file='skip'` (default) leaves out, with one warning listing them, files that are
        empty, have no image extension or no image header; `'raise'` makes them an error.
        Corrupt image bodies are only found by decoding: `check_images=True` decodes every file
        once up-front (at reduced size, in threads) and applies the same policy; otherwise a
        corrupt file stops loading with an error naming it.
        """
        path, (trn_tfm, val_tfm) = Path(path), _check_tfms(tfms)
        hint = layout_hint(path, trn_name, val_name)
        for name in (trn_name, val_name):
            if not (path / name).is_dir():
                raise FileNotFoundError(f"folder {path / name} not found; {hint}")
        trn_f, trn_y, classes, bad, empty = folder_source(path, trn_name)
        if not classes:
            raise ValueError(f"{path / trn_name} has no class sub-folders; {hint}")
        val_f, val_y, _, val_bad, val_empty = folder_source(path, val_name, classes)
        if empty or val_empty:
            warnings.warn(f"class folder(s) without images under {path}: {empty + val_empty}; "
                          "each class keeps its index", stacklevel=2)
        tst = (scan_test_folder(path, test_name, classes, test_with_labels) if test_name
               else ([], np.zeros(0, np.int64), []))
        drop = screen_files(path, bad + val_bad + tst[2], trn_f + val_f + tst[0], on_bad_file,
                       check_images)
        (trn_f, trn_y), (val_f, val_y) = _subset(trn_f, trn_y, drop), _subset(val_f, val_y, drop)
        if not trn_f or not val_f:
            empty_split = path / (val_name if trn_f else trn_name)
            raise ValueError(f"no usable images in {empty_split}; {hint}")
        c = len(classes)
        test_ds = (FilesDataset(*_subset(tst[0], tst[1], drop), val_tfm, path, c=c)
                   if test_name else None)
        return cls(path, FilesDataset(trn_f, trn_y, trn_tfm, path, c=c),
                   FilesDataset(val_f, val_y, val_tfm, path, c=c), test_ds,
                   bs=bs, num_workers=num_workers, classes=classes)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, folder: str, csv_fname: str | os.PathLike,
                 bs: int = 64, tfms: Tfms = (None, None), val_idxs: Any = None, suffix: str = '',
                 test_name: str | None = None, continuous: bool = False, skip_header: bool = True,
                 cat_separator: str = ' ', num_workers: int | None = None, *,
                 on_bad_file: str = 'skip', check_images: bool = False) -> 'ImageClassifierData':
        """Data from a CSV of `file id,label(s)`; the files are `path/folder/<id><suffix>`.

            data = ImageClassifierData.from_csv(PATH, 'train-jpg', f'{PATH}train_v2.csv',
                                                tfms=tfms, suffix='.jpg', val_idxs=val_idxs)

        Labels are split on `cat_separator`: one label on every row gives class indices; any
        row with several (or none) gives n-hot float32 targets and `is_multi`; `continuous=True`
        parses numbers into float32 `(n, k)` targets and `is_reg`. `val_idxs` index the data
        rows (default `get_cv_idxs(n)`). `csv_fname` may be a full path or relative to `path`.
        A missing file or a malformed row is an error naming the CSV line; unusable files follow
        `on_bad_file` and `check_images` as in `from_paths`.
        """
        path, (trn_tfm, val_tfm) = Path(path), _check_tfms(tfms)
        if Path(folder).is_absolute():
            raise ValueError(f"folder must be relative to path ({path}), got {folder!r}")
        csv_path = Path(csv_fname) if Path(csv_fname).exists() else path / csv_fname
        if not csv_path.is_file():
            raise FileNotFoundError(f"CSV {csv_fname} not found (nor {csv_path}); pass its path")
        rows = parse_csv_labels(csv_path, skip_header, cat_separator)
        y, classes = csv_labels(rows, csv_path, continuous)
        fnames, bad = csv_files(path, folder, rows, suffix, csv_path)
        val = csv_val_idxs(get_cv_idxs(len(rows)) if val_idxs is None else val_idxs, len(rows))
        is_val = np.zeros(len(rows), bool)
        is_val[val] = True
        csv_check_split(rows, y, is_val, classes, csv_path)
        tst = (scan_test_folder(path, test_name, classes or [], False) if test_name
               else ([], np.zeros(0, np.int64), []))
        drop = screen_files(path, bad + tst[2], fnames + tst[0], on_bad_file, check_images)
        splits = [_subset([f for f, v in zip(fnames, is_val) if v == want], y[is_val == want], drop)
                  for want in (False, True)]
        c = len(classes) if classes is not None else y.shape[1]
        trn_ds, val_ds = (FilesDataset(f, lbl, t, path, c=c, is_reg=continuous)
                          for (f, lbl), t in zip(splits, (trn_tfm, val_tfm)))
        test_ds = (FilesDataset(*_subset(tst[0], tst[1], drop), val_tfm, path, c=c,
                                is_reg=continuous) if test_name else None)
        return cls(path, trn_ds, val_ds, test_ds, bs=bs, num_workers=num_workers, classes=classes)

    @classmethod
    def from_arrays(cls, path: str | os.PathLike, trn: tuple[np.ndarray, np.ndarray],
                    val: tuple[np.ndarray, np.ndarray], bs: int = 64, tfms: Tfms = (None, None),
                    classes: Sequence[str] | None = None, test: Any = None,
                    num_workers: int | None = None, continuous: bool = False
                    ) -> 'ImageClassifierData':
        """Data from in-memory `(x, y)` arrays.

            data = ImageClassifierData.from_arrays(PATH, (x_trn, y_trn), (x_val, y_val), tfms=tfms)

        `x` is images `(N, H, W[, C])` (transformed as PIL images) or feature vectors `(N, F)`
        (returned unchanged, loaded in-process). `y`: class indices, n-hot rows (multi-label) or,
        with `continuous=True`, numbers. `test` is an `x` array (labels 0) or an `(x, y)` pair.
        """
        trn_tfm, val_tfm = _check_tfms(tfms)
        for name, pair in (('trn', trn), ('val', val)):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"{name} must be an (x, y) pair of arrays, got "
                                 f"{type(pair).__name__}")
        ys = [np.asarray(trn[1]), np.asarray(val[1])]
        if not continuous:
            _check_val_classes_trained(ys[0], ys[1], classes)
        c = len(classes) if classes is not None else infer_c(np.concatenate(ys), continuous)
        if test is not None and not isinstance(test, (tuple, list)):
            test = (test, np.zeros((len(test),) + ys[0].shape[1:], ys[0].dtype))
        dss = [ArraysDataset(x, y, t, c=c, is_reg=continuous) if x is not None else None
               for x, y, t in ((trn[0], ys[0], trn_tfm), (val[0], ys[1], val_tfm),
                               (*(test or (None, None)), val_tfm))]
        trn_ds, val_ds, test_ds = dss
        if trn_ds is None or val_ds is None:
            raise ValueError('from_arrays: trn and val need an x array each, got None; pass (x, y) pairs of arrays')
        return cls(path, trn_ds, val_ds, test_ds, bs=bs, num_workers=num_workers, classes=classes)

    def resize(self, targ_sz: int, new_path: str | os.PathLike = 'tmp', *,
               max_workers: int | None = None) -> 'ImageClassifierData':
        """Copies of every image with the shorter side `targ_sz`, and data that reads them.

            data = data.resize(340, 'tmp')   # then load faster at sz 224/299

        Writes `path/new_path/<targ_sz>/<same relative names>` (an absolute `new_path` puts them
        elsewhere, e.g. when `path` is read-only) with `max_workers` threads (default: the
        cores). Smaller images are copied unchanged, never enlarged. Resumable: a copy at least
        as new as its source is kept. Each file is written whole or not at all. Files that fail
        are listed in one warning and left out of the returned data, which otherwise has the
        same `path`, split, classes and transforms. The source folders are only read.
        """
        dss = [d for d in (self.trn_ds, self.val_ds, self.test_ds) if d is not None]
        if not all(isinstance(d, FilesDataset) for d in dss):
            raise ValueError("resize works on image files; data from arrays is already in memory")
        files = [d for d in dss if isinstance(d, FilesDataset)]  # all of them
        if int(targ_sz) < 1:
            raise ValueError(f"targ_sz must be a positive number of pixels, got {targ_sz}")
        dest = resize_dest(self.path, new_path, int(targ_sz))
        jobs = {f: (d.root / f, dest / f, int(targ_sz)) for d in files for f in d.fnames}
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=max_workers or num_cpus()) as pool:
            errors = dict(zip(jobs, pool.map(resize_one, jobs.values())))
        failed = {f: e for f, e in errors.items() if e}
        if failed:
            listing = '; '.join(f'{f} ({e})' for f, e in list(failed.items())[:10])
            warnings.warn(f"resize failed for {len(failed)} of {len(jobs)} file(s), left out of "
                          f"the resized data: {listing}", stacklevel=2)
        new = [d.with_root(dest, set(failed)) for d in files]
        return type(self)(self.path, new[0], new[1], new[2] if self.test_ds is not None else None,
                          bs=self.bs, num_workers=self.num_workers, classes=self.classes)

    def show_batch(self, rows: int = 3, **kwargs: Any) -> Any:
        """`data.show_batch(rows=3)`: a grid of training items with their targets (see
        `show.show_batch`); returns the figure."""
        return show_batch(self, rows, **kwargs)

    def __repr__(self) -> str:
        kind = 'regression' if self.is_reg else 'multi-label' if self.is_multi else 'single-label'
        n = lambda ds: len(ds) if ds is not None else 0  # noqa: E731
        return (f"{type(self).__name__}(path={str(self.path)!r}, {kind}, c={self.c}, "
                f"classes={self.classes}, sz={self.sz}, bs={self.bs}, "
                f"num_workers={self.num_workers}, "
                f"train={n(self.trn_ds)}, valid={n(self.val_ds)}, test={n(self.test_ds)}, "
                f"root={str(self.trn_ds.root) if self.trn_ds.root else None!r})")
