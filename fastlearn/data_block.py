"""The data block API: data built by chaining small steps instead of one factory call.

    data = (ImageFileList.from_folder(path)
            .label_from_folder()
            .split_by_folder()
            .add_test_folder()
            .datasets()
            .transform(tfms, size=224)
            .databunch())

    get_y_fn = lambda x: path/'labels'/f'{x.stem}_P.png'
    src = (SegmentationItemList.from_folder(path/'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(get_y_fn, classes=codes))
    data = src.transform(tfms, size=size, tfm_y=True).databunch(bs=bs)

A source (`from_folder`, `from_csv`, `from_df`, `from_list`), then labels (`label_from_*`) and a
split (`split_by_*`, `no_split`) in either order, optionally `add_test_folder`, then
`transform` and `databunch`. Each step returns a new object, so a `src` can be transformed at
several sizes. The result is the `ImageClassifierData` the factories build (six loaders,
`classes`, `c`, `is_multi`, `is_reg`), so `ConvLearner.pretrained`, precompute and TTA take it
unchanged. Files, CSVs and bad files go through `sources.py`'s functions, the ones the factories
use, so both paths read data the same way.

Label kinds: classes (one per image), tags (several: `is_multi`), numbers (`is_reg`), points
(`(n, 2)` of (y, x) pixels per image, `is_reg`; `tfm_y=True` moves them with the image) and masks
(`SegmentationItemList`; `tfm_y=True` resamples them nearest-neighbour, padding with Void).
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .dataset import FilesDataset, ImageClassifierData, get_cv_idxs
from .csv_labels import csv_labels, parse_csv_labels
from .sources import csv_files, scan_test_folder, screen_files, walk_images
from .target_data import SegmentationDataset, UnlabelledDataset, label_kind, retarget
from .transforms import TfmType

__all__ = ['ImageFileList', 'ImageItemList', 'SegmentationItemList']

_LABEL_STEPS = 'label_from_folder(), label_from_csv(), label_from_func(f) or label_from_re(pat)'
_SPLIT_STEPS = ("split_by_folder(), split_by_fname_file('valid.txt'), split_by_idx(idxs), "
                "split_by_pct(0.2) or no_split()")


_L = TypeVar('_L', bound='ImageFileList')


class ImageFileList:
    """Image files under `path` (names relative to it), to be labelled, split, transformed and
    loaded one step at a time (see the module's docstring). `ImageItemList` is the same class
    under the course's later name."""

    _built: tuple[Any, list[str], list[str] | None]  # (train, valid), test, classes: set by datasets()

    def __init__(self, path: str | os.PathLike, items: Sequence[str], *,
                 bad: Sequence[tuple[str, str]] = (), rows: list | None = None,
                 csv_path: Path | None = None) -> None:
        self.path, self.items = Path(path), [str(i) for i in items]
        self._bad, self._rows, self._csv = list(bad), rows, csv_path
        self._kind: str | None = None  # 'category', 'multi', 'float', 'points', 'mask'
        self._raw: list | None = None  # one label per item, before classes are indexed
        self._y: np.ndarray | None = None  # labels already indexed (a CSV, as the factory does)
        self._classes: list[str] | None = None
        self._split: np.ndarray | None = None  # per item: 0 train, 1 valid, -1 left out
        self._test: tuple[list[str], list] | None = None
        self._tfms: tuple[Any, Any] = (None, None)
        self.void: int | None = None

    def _step(self: _L, **state: Any) -> _L:
        new = copy.copy(self)
        for k, v in state.items():
            setattr(new, k, v)
        return new

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        split = ('no split yet' if self._split is None else
                 f'{(self._split == 0).sum()} train, {(self._split == 1).sum()} valid')
        return (f'{type(self).__name__}({len(self)} items under {self.path}, labels: '
                f'{self._kind or "none yet"}, {split})')

    # ------------------------------------------------------------------------ sources

    @classmethod
    def from_folder(cls, path: str | os.PathLike, extensions: Sequence[str] | None = None
                    ) -> 'ImageFileList':
        """`ImageFileList.from_folder(PATH)`: every image under `path`, at any depth, sorted
        folder by folder; `extensions=['.jpg']` keeps only those. Files that are not images
        (by extension or header) are left out at `datasets()`, with one warning."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"from_folder: folder {path} not found; pass the folder that "
                                    "holds the images")
        good, bad = walk_images(path)
        if extensions is not None:
            exts = {e.lower() if e.startswith('.') else f'.{e.lower()}' for e in extensions}
            good = [f for f in good if Path(f).suffix.lower() in exts]
            bad = [(f, w) for f, w in bad if Path(f).suffix.lower() in exts]
        if not good:
            raise ValueError(f"from_folder: no images under {path}"
                             f"{f' with extensions {sorted(exts)}' if extensions else ''}")
        return cls(path, good, bad=bad)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, csv_name: str | os.PathLike, folder: str = '.',
                 suffix: str = '', *, skip_header: bool = True, cat_separator: str = ' '
                 ) -> 'ImageFileList':
        """`ImageFileList.from_csv(PATH, 'train_v2.csv', folder='train-jpg', suffix='.jpg')`:
        the files `path/folder/<id><suffix>` of a CSV's `id,label(s)` rows, read and checked as
        `ImageClassifierData.from_csv` reads them; `label_from_csv()` then takes column 1."""
        path = Path(path)
        csv_path = Path(csv_name) if Path(csv_name).exists() else path / csv_name
        if not csv_path.is_file():
            raise FileNotFoundError(f"from_csv: CSV {csv_name} not found (nor {csv_path}); pass "
                                    "its path, or a name relative to path")
        rows = parse_csv_labels(csv_path, skip_header, cat_separator)
        fnames, bad = csv_files(path, folder, rows, suffix, csv_path)
        return cls(path, fnames, bad=bad, rows=rows, csv_path=csv_path)

    @classmethod
    def from_list(cls, path: str | os.PathLike, names: Sequence[str], folder: str = '.',
                  suffix: str = '', labels: Sequence[str] | None = None) -> 'ImageFileList':
        """`ImageFileList.from_list(PATH, ids, folder='train', suffix='.jpg', labels=tags)`:
        named files; with `labels` (one string per name, space-separated tags or numbers),
        `label_from_df()` takes them as `label_from_csv()` takes a CSV's column."""
        path, names = Path(path), [str(n) for n in names]
        lbls = [''] * len(names) if labels is None else [str(v) for v in labels]
        if len(lbls) != len(names):
            raise ValueError(f"from_list: {len(names)} names but {len(lbls)} labels")
        rows = [(i + 1, n, lbl.split()) for i, (n, lbl) in enumerate(zip(names, lbls))]
        fnames, bad = csv_files(path, folder, rows, suffix, Path('<list>'))
        return cls(path, fnames, bad=bad, rows=rows if labels is not None else None,
                   csv_path=Path('<list>'))

    @classmethod
    def from_df(cls, path: str | os.PathLike, df: Any, folder: str = '.', suffix: str = ''
                ) -> 'ImageFileList':
        """`ImageFileList.from_df(PATH, df, folder='train', suffix='.jpg')`: a pandas DataFrame
        whose column 0 holds the ids and column 1 (if any) the labels."""
        cols = [list(df.iloc[:, i]) for i in range(min(2, df.shape[1]))]
        return cls.from_list(path, cols[0], folder, suffix, cols[1] if len(cols) > 1 else None)

    # ------------------------------------------------------------------------- labels

    def _labelled(self: _L, kind: str, raw: list | None = None, y: np.ndarray | None = None,
                  classes: Sequence[str] | None = None) -> _L:
        return self._step(_kind=kind, _raw=raw, _y=y,
                          _classes=None if classes is None else [str(c) for c in classes])

    def label_from_folder(self) -> 'ImageFileList':
        """`.label_from_folder()`: the class is the folder holding the image (`train/cats/1.jpg`
        is a cat); classes are the training set's, sorted, as in `from_paths`."""
        if any('/' not in f for f in self.items):
            f = next(f for f in self.items if '/' not in f)
            raise ValueError(f"label_from_folder: item {f!r} is not inside a class folder; use "
                             "label_from_csv or label_from_func for flat folders")
        return self._labelled('category', [Path(f).parent.name for f in self.items])

    def label_from_csv(self, *, continuous: bool = False, points: bool = False
                       ) -> 'ImageFileList':
        """`.label_from_csv()`: column 1 of the source CSV: one class per row, space-separated
        tags (any row with other than one: `is_multi`), `continuous=True` numbers (`is_reg`), or
        `points=True` `y x` pairs (`(n, 2)` points per image, the same n on every row)."""
        if self._rows is None or self._csv is None:  # (they come together)
            raise ValueError("label_from_csv: the items did not come from a CSV; start with "
                             "ImageFileList.from_csv(path, 'labels.csv', ...) or use "
                             f"another label step: {_LABEL_STEPS}")
        where = self._csv
        if points:
            y = csv_labels(self._rows, where, True)[0]
            if y.shape[1] % 2:
                raise ValueError(f"label_from_csv: points=True needs 'y x' pairs; {where} has "
                                 f"{y.shape[1]} numbers per row")
            return self._labelled('points', y=y.reshape(len(y), -1, 2))
        y, classes = csv_labels(self._rows, where, continuous)
        return self._labelled('float' if continuous else 'csv', y=y, classes=classes)

    label_from_df = label_from_csv

    def label_from_func(self, func: Callable[[Path], Any], classes: Sequence[str] | None = None
                        ) -> 'ImageFileList':
        """`.label_from_func(lambda p: p.name.split('_')[0])`: `func(path/item)` per item: a
        string (a class), a list of strings (tags), a number (regression) or an `(n, 2)` array
        (points). `classes` fixes the class index (default: the training labels, sorted)."""
        raw = [self._call('label_from_func', func, f) for f in self.items]
        kind = label_kind(raw, self.items)
        return self._labelled(kind, [str(r) for r in raw] if kind == 'category' else raw,
                              classes=classes)

    def label_from_re(self, pat: str, full_path: bool = False) -> 'ImageFileList':
        """`.label_from_re(r'/([^/]+)_\\d+.jpg$')`: the class is the pattern's first group,
        searched in the file name (or the path relative to `path` with `full_path=True`)."""
        rx = re.compile(pat)

        def group(p: Path) -> str:
            m = rx.search(p.relative_to(self.path).as_posix() if full_path else p.name)
            if m is None:
                raise ValueError(f"pattern {pat!r} does not match")
            return m.group(1) if m.groups() else m.group(0)
        return self._labelled('category', [self._call('label_from_re', group, f)
                                           for f in self.items])

    def _call(self, step: str, func: Callable, item: str) -> Any:
        try:
            return func(self.path / item)
        except Exception as e:
            raise ValueError(f"{step}: failed on item {self.path / item} ({type(e).__name__}: "
                             f"{e}); fix the function or the file, or leave the file out of "
                             "the source") from e

    # ------------------------------------------------------------------------- splits

    def _split_as(self, split: np.ndarray, step: str) -> 'ImageFileList':
        if not (split == 0).any():
            raise ValueError(f"{step}: no item is left for training; check the argument")
        return self._step(_split=split)

    def split_by_folder(self, train: str = 'train', valid: str = 'valid') -> 'ImageFileList':
        """`.split_by_folder()`: items under `path/train` train, under `path/valid` validate;
        others (a test folder) are left out."""
        top = np.array([f.split('/', 1)[0] for f in self.items])
        split = np.where(top == train, 0, np.where(top == valid, 1, -1))
        if not (split == 1).any():
            raise ValueError(f"split_by_folder: no item under {self.path / valid}; pass "
                             f"valid= the validation folder's name")
        return self._split_as(split, 'split_by_folder')

    def split_by_fname_file(self, fname: str | os.PathLike, path: str | os.PathLike | None = None
                            ) -> 'ImageFileList':
        """`.split_by_fname_file('../valid.txt')`: the file (relative to `path`, default the
        list's) names the validation images, one a line, by file name or relative path."""
        f = Path(path or self.path) / fname
        if not f.is_file():
            raise FileNotFoundError(f"split_by_fname_file: {f} not found; pass the file naming "
                                    "the validation images (relative to the list's path)")
        names = [n.strip() for n in f.read_text().splitlines() if n.strip()]
        return self.split_by_files(names, where=str(f))

    def split_by_files(self, names: Sequence[str], *, where: str = 'names') -> 'ImageFileList':
        """`.split_by_files(valid_names)`: the named items validate (by file name or relative
        path), the rest train. Names that are not items are ignored (a CSV may list a subset of
        the photos), but at least one must be."""
        want = set(names)
        split = np.array([int(f in want or Path(f).name in want) for f in self.items])
        if not split.any():
            raise ValueError(f"split_by_files: none of the {len(want)} name(s) in {where} is an "
                             f"item (e.g. {sorted(want)[:2]} vs items like {self.items[:2]}); "
                             "list file names or paths relative to the list's path")
        return self._split_as(split, 'split_by_files')

    def split_by_idx(self, valid_idx: Sequence[int] | np.ndarray) -> 'ImageFileList':
        """`.split_by_idx(val_idxs)`: the items at these indices validate."""
        idx = np.asarray(valid_idx, dtype=np.int64).ravel()
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"split_by_idx: indices must be in 0..{len(self) - 1}; got "
                             f"{idx.min()}..{idx.max()}")
        split = np.zeros(len(self), np.int64)
        split[idx] = 1
        return self._split_as(split, 'split_by_idx')

    def split_by_pct(self, valid_pct: float = 0.2, seed: int = 42) -> 'ImageFileList':
        """`.split_by_pct(0.2)`: a random `valid_pct` validates: `get_cv_idxs(n, val_pct=...,
        seed=seed)`, the factories' default split; the global random state is left alone."""
        return self.split_by_idx(get_cv_idxs(len(self), val_pct=valid_pct, seed=seed))

    def no_split(self) -> 'ImageFileList':
        """`.no_split()`: everything trains; the validation set is empty."""
        return self._split_as(np.zeros(len(self), np.int64), 'no_split')

    def add_test_folder(self, test_folder: str = 'test') -> 'ImageFileList':
        """`.add_test_folder('test')`: the images of the flat folder `path/test_folder`."""
        fnames, _, bad = scan_test_folder(self.path, test_folder, [], False)
        return self._step(_test=(fnames, bad))

    # --------------------------------------------------------------- datasets and loaders

    def datasets(self, *, on_bad_file: str = 'skip', check_images: bool = False
                 ) -> 'ImageFileList':
        """`.datasets()`: check that labels and a split are in place, index the classes (from
        the training items) and apply the bad-file policy (`on_bad_file`, `check_images` as in
        `ImageClassifierData.from_paths`). Optional: `databunch()` does it if needed."""
        for step, missing, steps in (('labels', self._kind is None, _LABEL_STEPS),
                                     ('a split', self._split is None, _SPLIT_STEPS)):
            if missing:
                raise ValueError(f"datasets: the items have no {step} yet; call {steps} "
                                 "before datasets(), transform() or databunch()")
        assert self._split is not None  # checked just above
        test, test_bad = self._test or ([], [])
        drop = screen_files(self.path, self._bad + test_bad, self.items + test, on_bad_file,
                            check_images)
        keep = np.array([f not in drop for f in self.items], bool) & (self._split >= 0)
        y, classes = self._index(keep)
        parts = [([f for f, k, s in zip(self.items, keep, self._split) if k and s == want],
                  y[keep & (self._split == want)]) for want in (0, 1)]
        if not parts[0][0]:
            raise ValueError(f"datasets: no usable training image under {self.path}")
        return self._step(_built=(parts, [f for f in test if f not in drop], classes))

    def _index(self, keep: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        """The labels as the loaders give them, and the classes."""
        kind, raw, classes = self._kind, self._raw, self._classes
        if self._y is not None:
            return self._y, classes
        assert raw is not None and self._split is not None  # datasets() checked labels and split
        if kind == 'category':
            classes = classes or sorted({r for r, k, s in zip(raw, keep, self._split)
                                         if k and s == 0})
            index = {c: i for i, c in enumerate(classes)}
            for f, r, k in zip(self.items, raw, keep):
                if k and r not in index:
                    raise ValueError(f"datasets: item {f} has label {r!r}, which no training "
                                     f"item has (classes {classes}); pass classes= or move it")
            return np.array([index.get(r, -1) for r in raw], np.int64), classes
        if kind == 'multi':
            classes = classes or sorted({t for r in raw for t in r})
            index, y = {c: i for i, c in enumerate(classes)}, np.zeros((len(raw), len(classes)))
            for i, r in enumerate(raw):
                y[i, [index[t] for t in r]] = 1
            return y.astype(np.float32), classes
        if kind == 'mask':
            return np.array([str(r) for r in raw], dtype=object), classes
        shapes = {np.shape(r) for r in raw}
        if len(shapes) > 1:
            raise ValueError(f"datasets: labels of different shapes {sorted(shapes)[:3]}; every "
                             f"item needs the same number of values (points: the same n)")
        y = np.array(raw, np.float32)
        return (y if kind == 'points' else y.reshape(len(y), -1)), None

    def transform(self, tfms: tuple[Any, Any] = (None, None), size: Any = None,
                  tfm_y: bool | TfmType | None = None) -> 'ImageFileList':
        """`.transform(tfms_from_model(arch, 224, aug_tfms=transforms_side_on), size=224)`:
        the (train, valid) transforms; `size` (an int or (h, w)) overrides theirs; `tfm_y=True`
        moves the targets with the image (points and boxes: `TfmType.COORD`, masks:
        `TfmType.CLASS` padded with the list's `void`)."""
        if self._kind is None:
            raise ValueError(f"transform: the items have no labels yet; call {_LABEL_STEPS} "
                             "first")
        if not (isinstance(tfms, (tuple, list)) and len(tfms) == 2):
            raise ValueError("transform: tfms must be a (train, valid) pair, as "
                             f"tfms_from_model(arch, sz) returns; got {type(tfms).__name__}")
        changes: dict[str, Any] = {} if size is None else {'sz': size}
        want = self._target_type(tfm_y)
        if want is not None:
            changes.update(tfm_y=want, void=self.void if want is TfmType.CLASS else None)
        return self._step(_tfms=tuple(retarget(t, **changes) for t in tfms))

    def _target_type(self, tfm_y: Any) -> TfmType | None:
        if isinstance(tfm_y, TfmType):
            return tfm_y
        moving = {'points': TfmType.COORD, 'float': TfmType.COORD, 'mask': TfmType.CLASS}
        if tfm_y and self._kind not in moving:
            raise ValueError(f"transform: tfm_y=True moves targets with the image, but the "
                             f"labels are {self._kind} labels; leave tfm_y out")
        if not tfm_y and self._kind == 'mask':
            raise ValueError("transform: masks must move with their image; pass tfm_y=True")
        return moving[self._kind] if tfm_y and self._kind else None  # (tfm_y: a kind in moving)

    def databunch(self, bs: int = 64, num_workers: int | None = None) -> ImageClassifierData:
        """`.databunch(bs=64)`: the `ImageClassifierData` with its six loaders."""
        src = self if hasattr(self, '_built') else self.datasets()
        (trn, val), test, classes = src._built
        trn_t, val_t = self._tfms
        c = len(classes) if classes is not None else int(np.prod(trn[1].shape[1:]))
        dss: list[FilesDataset]
        if self._kind == 'mask':
            assert classes is not None  # label_from_func requires them
            dss = [SegmentationDataset(f, y, t, self.path, classes=classes, void=self.void)
                   for (f, y), t in ((trn, trn_t), (val, val_t))]
        else:
            is_reg = self._kind in ('float', 'points')
            dss = [FilesDataset(f, y, t, self.path, c=c, is_reg=is_reg)
                   for (f, y), t in ((trn, trn_t), (val, val_t))]
        test_ds = None
        if self._test is not None:
            test_ds = (FilesDataset(test, np.zeros(len(test), np.int64), val_t, self.path, c=c)
                       if self._kind in ('category', 'multi', 'csv', 'float') else
                       UnlabelledDataset(test, val_t, self.path, c))
        return ImageClassifierData(self.path, dss[0], dss[1], test_ds, bs=bs, num_workers=num_workers,
                                   classes=classes)


ImageItemList = ImageFileList


class SegmentationItemList(ImageFileList):
    """Images labelled with masks: `.label_from_func(get_y_fn, classes=codes)` where
    `get_y_fn(image_path)` gives the mask's path. `void` is the label to ignore: the index of
    'Void' in `codes` unless given (CamVid: 11); rotations and crops pad masks with it."""

    def label_from_func(self, func: Callable[[Path], Any], classes: Sequence[str] | None = None,
                        *, void: int | None = None) -> 'SegmentationItemList':
        if classes is None:
            raise ValueError("label_from_func: masks need classes=codes, the names of the "
                             "class indices (e.g. np.loadtxt(path/'codes.txt', dtype=str))")
        codes = [str(c) for c in classes]
        masks = [Path(self._call('label_from_func', func, f)) for f in self.items]
        for f, m in zip(self.items, masks):
            if not m.is_file():
                raise FileNotFoundError(f"label_from_func: the mask {m} for item {f} does not "
                                        "exist; fix get_y_fn or leave the image out")
        new = self._labelled('mask', masks, classes=codes)
        new.void = void if void is not None else codes.index('Void') if 'Void' in codes else None
        return new
