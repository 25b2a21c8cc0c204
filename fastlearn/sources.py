"""Where a data set's image files are: one folder per class, a flat or labelled test folder, the
files a CSV names, and the bad-file screening over them (`dataset.py` and `data_block.py` build on
these; `images.py` checks and opens each file)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .core import num_cpus
from .images import apply_bad_file_policy, check_decodes, check_image_file

__all__ = ['folder_source', 'list_images', 'is_ignored']

# Names that operating systems and tools leave beside the data; never data themselves.
_IGNORED_NAMES = frozenset({'__MACOSX', 'Thumbs.db', 'desktop.ini', '__pycache__'})


def is_ignored(name: str) -> bool:
    """Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`, ...) and OS clutter."""
    return name.startswith('.') or name in _IGNORED_NAMES


def list_images(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Image file names directly inside `folder` (sorted), and `(name, reason)` for files that
    fail `check_image_file`, cannot be read, or are broken or looping symbolic links. Ignored
    names and sub-folders are left out silently."""
    good, bad = [], []
    with os.scandir(folder) as it:
        for e in it:
            if is_ignored(e.name):
                continue
            try:
                if not e.is_file():
                    if e.is_symlink() and not e.is_dir():
                        bad.append((e.name, 'broken symbolic link: its target does not exist'))
                    continue
                why = check_image_file(e.path, e.stat().st_size)
            except OSError as err:  # a symlink loop (ELOOP), an unreadable file (EACCES), ...
                bad.append((e.name, f'cannot be read: {err.strerror or err}'))
                continue
            if why:
                bad.append((e.name, why))
            else:
                good.append(e.name)
    return sorted(good), sorted(bad)


def screen_files(path: Path, bad: list[tuple[str, str]], names: list[str], on_bad_file: str,
            check_images: bool) -> set[str]:
    """Apply the bad-file policy once for a whole data set (decoding every file first when
    `check_images`); the names to leave out."""
    if check_images:
        bad = bad + check_decodes(path, names, num_cpus())
    apply_bad_file_policy(bad, on_bad_file, str(path))
    return {f for f, _ in bad}


def layout_hint(path: Path, trn: str, val: str) -> str:
    return (f"from_paths expects one folder per class: {path / trn}/<class>/<image> and "
            f"{path / val}/<class>/<image> (and optionally a flat {path}/<test_name>/<image>)")


def _is_dir(e: os.DirEntry) -> bool:
    try:
        return e.is_dir()
    except OSError:  # a symlink loop is no folder; a file-level entry, not a class
        return False


def _class_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if _is_dir(e) and not is_ignored(e.name))


def folder_source(path: Path, folder: str, classes: Sequence[str] | None = None
                  ) -> tuple[list[str], np.ndarray, list[str], list[tuple[str, str]], list[str]]:
    """Scan `path/folder/<class>/*`: `(fnames, y, classes, bad, empty)` with fnames relative to
    `path`, y class indices, classes sorted (or the given index, which must cover every
    sub-folder), bad `(fname, reason)` for unusable files, empty the classes with no image."""
    root = path / folder
    found = _class_dirs(root)
    classes = list(found if classes is None else classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root} has class folder(s) {unknown} that the training set "
                         f"({classes}) lacks; add them to the training folder or remove them")
    fnames, ys, bad, empty = [], [], [], []
    for cls in found:
        good, bad_here = list_images(root / cls)
        fnames += [f'{folder}/{cls}/{n}' for n in good]
        ys += [classes.index(cls)] * len(good)
        bad += [(f'{folder}/{cls}/{n}', why) for n, why in bad_here]
        if not good:
            empty.append(f'{folder}/{cls}')
    return fnames, np.array(ys, dtype=np.int64), classes, bad, empty


def scan_test_folder(path: Path, test_name: str, classes: list[str], with_labels: bool
                     ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """`(fnames, y, bad)` for a flat test folder (labels 0) or, `with_labels`, one folder per
    class indexed by `classes`."""
    root = path / test_name
    if not root.is_dir():
        raise FileNotFoundError(f"test folder {root} not found; pass test_name= the name of a "
                                f"folder inside {path}, or test_name=None")
    if with_labels:
        fnames, y, _, bad, _ = folder_source(path, test_name, classes)
        return fnames, y, bad
    good, bad = list_images(root)
    if not good and _class_dirs(root):
        raise ValueError(f"test folder {root} holds sub-folders but no images; if it has one "
                         "folder per class pass test_with_labels=True")
    return [f'{test_name}/{n}' for n in good], np.zeros(len(good), np.int64), \
        [(f'{test_name}/{n}', why) for n, why in bad]


def csv_files(path: Path, folder: str, rows: list, suffix: str, csv_path: Path
              ) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative file names for the CSV's rows, and the unusable ones; a missing file is an error."""
    fnames, bad = [], []
    top = os.path.normpath(folder)
    for line, fid, _ in rows:
        fname = f'{folder}/{fid}{suffix}'
        rel = os.path.relpath(os.path.normpath(fname), top)  # lexical: symlinked files still work
        if os.path.isabs(fid) or rel in ('.', '..') or rel.startswith('..' + os.sep):
            raise ValueError(f"{csv_path}, line {line}: file id {fid!r} points outside "
                             f"{path / folder}; ids name files inside that folder (e.g. "
                             f"'cat.1' or 'sub/cat.1'): fix the id or the `folder` argument")
        try:
            size = os.stat(path / fname).st_size
        except FileNotFoundError:
            if os.path.islink(path / fname):
                bad.append((fname, 'broken symbolic link: its target does not exist'))
                fnames.append(fname)
                continue
            near = sorted(p.name for p in (path / folder).glob(f'{Path(fid).name}.*'))[:3]
            hint = f"; files with that id exist: {near}, so pass suffix='{Path(near[0]).suffix}'" \
                if near and not suffix else "; check `folder` and `suffix`, or remove the row"
            raise FileNotFoundError(f"{csv_path}, line {line}: file {path / fname} does not "
                                    f"exist{hint}") from None
        except OSError as err:  # a symlink loop, an unreadable folder
            bad.append((fname, f'cannot be read: {err.strerror or err}'))
            fnames.append(fname)
            continue
        why = check_image_file(path / fname, size)
        if why:
            bad.append((fname, why))
        fnames.append(fname)
    return fnames, bad


def walk_images(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every image under `root` (sorted, folder by folder), relative to it, and the bad files."""
    good, bad, stack = [], [], ['']
    while stack:
        rel = stack.pop(0)
        names, bad_here = list_images(root / rel)
        good += [f'{rel}{n}' for n in names]
        bad += [(f'{rel}{n}', why) for n, why in bad_here]
        with os.scandir(root / rel) as it:
            subs = sorted(e.name for e in it if e.is_dir() and not is_ignored(e.name))
        stack[:0] = [f'{rel}{s}/' for s in subs]
    return good, bad
