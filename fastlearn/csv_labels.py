"""Reading the labels of a CSV (`ImageClassifierData.from_csv`, `label_from_csv`): the rows with
their line numbers, the labels as classes, tags (n-hot) or numbers, and the checks of a split, each
error naming the CSV, the line and the fix. Pure text and arrays: the files themselves are
`sources.py`'s concern.

    rows = parse_csv_labels(Path('labels.csv'))          # [(line, file id, [labels]), ...]
    y, classes = csv_labels(rows, Path('labels.csv'), continuous=False)
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ['parse_csv_labels', 'csv_labels', 'csv_check_split', 'csv_val_idxs']


def parse_csv_labels(csv_path: Path, skip_header: bool = True, cat_separator: str = ' '
                     ) -> list[tuple[int, str, list[str]]]:
    """`(line number, file id, labels)` for each data row of a CSV: column 0 the id, column 1
    the labels separated by `cat_separator`. Errors name the CSV, the line and the fix."""
    with open(csv_path, 'rb') as f:
        if b'\x00' in f.read(4096):  # a UTF-16 'Unicode text' export: every other byte is NUL
            raise ValueError(f"{csv_path} is not a UTF-8 text file (it holds NUL bytes: UTF-16, "
                             "or binary); save it as 'CSV UTF-8'")
    rows, width, header_left = [], None, skip_header
    # surrogateescape: bytes that are not UTF-8 (a CSV from a Windows zip) stay the bytes they
    # are, so ids still match the file names on disk, which Python decodes the same way.
    with open(csv_path, newline='', encoding='utf-8-sig', errors='surrogateescape') as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                where, width = f"{csv_path}, line {reader.line_num}", width or len(row)
                if len(row) < 2:
                    raise ValueError(f"{where}: {row!r} has no label column; from_csv needs column 0 "
                                     "= file id and column 1 = label(s), e.g. 'cat.1,cat'")
                if len(row) != width:
                    raise ValueError(f"{where}: {len(row)} columns where the first row has {width}; "
                                     "quote a label that contains a comma, or fix the row")
                if header_left:
                    header_left = False
                    continue
                if not row[0].strip():
                    raise ValueError(f"{where}: empty file id in column 0; fill it or remove the row")
                rows.append((reader.line_num, row[0].strip(),
                             [s for s in row[1].strip().split(cat_separator) if s]))
        except csv.Error as e:  # a field larger than csv's limit, a malformed dialect, ...
            raise ValueError(f"{csv_path}, line {reader.line_num}: cannot be read as CSV ({e}); "
                             "save it as 'CSV UTF-8', or fix that line") from None
    if not rows:
        raise ValueError(f"{csv_path} has no data rows (skip_header={skip_header}); expected "
                         "rows of 'file id,label(s)'")
    _refuse_duplicate_ids(rows, csv_path)
    return rows


def _refuse_duplicate_ids(rows: list[tuple[int, str, list[str]]], csv_path: Path) -> None:
    """One row per image: a repeated id could land in train and valid (a leak), and with other
    labels it asks for two answers to one image."""
    seen: dict[str, list[tuple[int, list[str]]]] = {}
    for line, fid, labels in rows:
        seen.setdefault(os.path.normpath(fid), []).append((line, labels))
    dups = {fid: hits for fid, hits in seen.items() if len(hits) > 1}
    if not dups:
        return
    fid, hits = next(iter(dups.items()))
    conflict = len({tuple(sorted(lbl)) for _, lbl in hits}) > 1
    what = ('with conflicting labels (' + ', '.join(f'line {ln}: {" ".join(lbl) or "none"}'
                                                    for ln, lbl in hits[:5]) + ')'
            if conflict else 'with the same labels')
    raise ValueError(f"{csv_path}: file id {fid!r} appears on lines {[ln for ln, _ in hits]} "
                     f"{what}; {len(dups)} id(s) repeat in all. One image on two rows can land in "
                     "both train and valid (a leak): keep one row per id (merge multi-label tags "
                     "into one row)")


def csv_labels(rows: list[tuple[int, str, list[str]]], csv_path: Path, continuous: bool
               ) -> tuple[np.ndarray, list[str] | None]:
    """Labels as regression values `(n, k)` float32, class indices, or n-hot `(n, c)` float32
    when any row has other than one label (the course's rule), with the sorted classes."""
    if continuous:
        k = len(rows[0][2])
        for line, _, labels in rows:
            if len(labels) != k or not k or not all(_is_float(v) for v in labels):
                raise ValueError(f"{csv_path}, line {line}: continuous=True needs {k or 'some'} "
                                 f"number(s) per row like line {rows[0][0]}, got {labels!r}")
            if not all(np.isfinite(float(v)) for v in labels):
                raise ValueError(f"{csv_path}, line {line}: {labels!r} is not finite (nan or inf); "
                                 "a regression target must be a number, and one nan makes every "
                                 "loss nan: fill in the value or remove the row")
        return np.array([[float(v) for v in labels] for _, _, labels in rows], np.float32), None
    classes = sorted({lbl for _, _, labels in rows for lbl in labels})
    index = {c: i for i, c in enumerate(classes)}
    if all(len(labels) == 1 for _, _, labels in rows):
        return np.array([index[labels[0]] for _, _, labels in rows], np.int64), classes
    if all(len(labels) <= 1 for _, _, labels in rows):
        lines = [line for line, _, labels in rows if not labels]
        warnings.warn(f"{csv_path}: line(s) {lines[:10]} have no label, so the data is treated as "
                      "multi-label (n-hot); give every row one label for single-label data",
                      stacklevel=3)
    y = np.zeros((len(rows), len(classes)), np.float32)
    for r, (_, _, labels) in enumerate(rows):
        y[r, [index[lbl] for lbl in labels]] = 1
    return y, classes


def csv_check_split(rows: list[tuple[int, str, list[str]]], y: np.ndarray, is_val: np.ndarray,
                    classes: list[str] | None, csv_path: Path) -> None:
    """Refuse a split where a class or tag appears only in validation rows: the model would
    have an output that training never sees as positive (`from_paths` refuses the same)."""
    if classes is None:  # regression
        return
    trn = y[~is_val]
    seen = trn.any(0) if y.ndim == 2 else np.bincount(trn, minlength=len(classes)) > 0
    unseen = [c for c, ok in zip(classes, seen) if not ok]
    if not unseen:
        return
    lines = [line for (line, _, labels), v in zip(rows, is_val) if v and unseen[0] in labels]
    raise ValueError(f"{csv_path}: label(s) {unseen[:10]} appear only in validation rows (e.g. "
                     f"{unseen[0]!r} on line(s) {lines[:10]}), so training never sees them; "
                     "choose val_idxs that leave a training row for each label, or remove those "
                     "labels")


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def csv_val_idxs(val_idxs: Any, n: int) -> np.ndarray:
    """`val_idxs` as unique row indices, checked against the CSV's `n` data rows."""
    val = np.unique(np.asarray(val_idxs, dtype=np.int64).ravel())
    if len(val) and (val.min() < 0 or val.max() >= n):
        raise ValueError(f"val_idxs must index the CSV's {n} data rows (0..{n - 1}), got values "
                         f"from {val.min()} to {val.max()}")
    if len(val) in (0, n):
        raise ValueError(f"val_idxs selects {len(val)} of {n} rows; both train and valid need "
                         "rows: use get_cv_idxs(n)")
    return val
