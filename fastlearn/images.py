"""Reading and scanning image files for `dataset.py`: `open_image`, cheap up-front checks of a
folder's files and the bad-file policy, folder scanning, the files a CSV names, and the per-file step of
`data.resize`."""
from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .core import atomic_write, num_cpus

# dataset.py also imports the scanning helpers below by name; these are the user-facing ones.
__all__ = ['open_image', 'BadImageError', 'TooLargeImageError', 'MAX_PIXELS', 'IMAGE_EXTENSIONS',
           'check_image_file', 'folder_source', 'resize_file']

# Formats are Pillow's: what it can open, less stubs (formats it names but cannot decode
# without a plugin of the user's), video (MPEG) and documents that need Ghostscript (EPS, PS).
_LEFT_OUT = frozenset({'MPEG', 'EPS'})


def _pillow_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(fmt for fmt, (factory, _) in Image.OPEN.items() if fmt not in _LEFT_OUT
                 and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)))


_FORMATS = _pillow_formats()
# Extensions whose files we read: those Pillow registers for the formats above.
IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in _FORMATS)
# Pillow's own signature tests (on a file's first 16 bytes, as `Image.open` calls them); a
# format with none (TGA, ...) is recognised by parsing its header.
# The common formats go first: most files stop at the first test.
_ACCEPTS = tuple(accept for fmt in sorted(_FORMATS, key=lambda f: f not in ('JPEG', 'PNG', 'WEBP'))
                 if (accept := Image.OPEN[fmt][1]) is not None)
_NO_SIGNATURE = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                          if fmt in _FORMATS and Image.OPEN[fmt][1] is None)
# Names that operating systems and tools leave beside the data; never data themselves.
_IGNORED_NAMES = frozenset({'__MACOSX', 'Thumbs.db', 'desktop.ini', '__pycache__'})
_ALPHA_MODES = frozenset({'RGBA', 'RGBa', 'LA', 'La', 'PA'})
_BAD_FILE_POLICIES = ('skip', 'raise')
_EXIF_ORIENTATION = 0x0112


class BadImageError(ValueError):
    """A file that should hold an image cannot be decoded (corrupt, truncated, not an image)."""


class TooLargeImageError(BadImageError):
    """An image too large to decode within `MAX_PIXELS` (see `open_image`)."""


# The most pixels one decode may produce: 50 MP is ~150 MB as RGB, per loader worker; an 8000x6000
# photo fits. Larger JPEGs decode at 1/2..1/8 scale; other formats above it are refused.
MAX_PIXELS = 50_000_000


def open_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """An image file as an upright 3-channel 8-bit PIL image.

        im = open_image(f'{PATH}valid/cats/cat.1001.jpg')

    `draft_size`: for JPEGs, let the decoder shrink by 1/2, 1/4 or 1/8 while both sides stay
    at least this long, much cheaper than decoding in full and resizing afterwards; the
    scale it took, `(y, x)`, is in `im.info['draft_scale']` (1.0 when decoded in full).
    EXIF orientation is applied. Grayscale, CMYK, palette and YCbCr become RGB; transparent
    pixels (RGBA, LA, palette or PNG transparency) are composited over white, as an image viewer
    shows them (the colour stored under a transparent pixel is arbitrary, often black);
    16-bit and 32-bit grayscale are scaled to 8 bits (see `_to_8bit`).
    One decode stays under `MAX_PIXELS` (50 MP): a larger JPEG is decoded at 1/2..1/8 scale, any
    other larger image raises `TooLargeImageError`.
    Raises FileNotFoundError for a missing file and `BadImageError` (a ValueError) naming the
    file for one that cannot be decoded.
    """
    try:
        with open(path, 'rb') as f:
            im = Image.open(f)
            full = im.size
            _draft(im, draft_size, path)
            im.load()
        out = _to_rgb(_upright(im))
        # Coordinate targets are in the full-size upright photo's pixels: keep the decode's scale
        # (y, x) so a dataset can scale them with the image (a turned photo swaps the axes).
        sy, sx = im.size[1] / full[1], im.size[0] / full[0]
        turned = out.size != im.size
        out.info['draft_scale'] = (sx, sy) if turned else (sy, sx)
        return out
    except (FileNotFoundError, PermissionError, IsADirectoryError, TooLargeImageError):
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise BadImageError(
            f"cannot decode image {os.fspath(path)!r} ({type(e).__name__}: {e}); the file is "
            "corrupt, truncated or not an image: replace or remove it (outside this library), or "
            "build the data with check_images=True, on_bad_file='skip' to leave out every such "
            "file up-front") from e


def _draft(im: Image.Image, draft_size: int | None, path: str | os.PathLike) -> None:
    """Choose the decode size: a JPEG shrinks by 1/2, 1/4 or 1/8 (the decoder's draft mode,
    nearly free) while both sides stay at least `draft_size`, and further if needed to keep one
    decode under `MAX_PIXELS`; any other image above `MAX_PIXELS` is refused before decoding.
    (A 12000x12000 photo would otherwise take ~1.4 GB per loader worker.)"""
    w, h = im.size
    if im.format == 'JPEG':
        req = (int(draft_size), int(draft_size)) if draft_size else None
        if w * h > MAX_PIXELS:
            scale = next((s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= MAX_PIXELS), 8)
            lim = (w // scale, h // scale)
            req = lim if req is None else (min(req[0], lim[0]), min(req[1], lim[1]))
        if req:  # only one draft call counts, so both wishes go into one request
            im.draft('RGB', req)
    if im.size[0] * im.size[1] > MAX_PIXELS:
        raise TooLargeImageError(
            f"image {os.fspath(path)!r} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), above the "
            f"{MAX_PIXELS / 1e6:.0f} MP that fastlearn decodes at once (a JPEG is read at reduced "
            "size, up to 8x smaller on each side, to fit); shrink it first (an image editor, or "
            "PIL's Image.reduce), or raise fastlearn.images.MAX_PIXELS if memory allows")


def _upright(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block must not make a readable photo unreadable
        return im
    return ImageOps.exif_transpose(im) if orientation not in (None, 1) else im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == 'RGB':
        return im
    if im.mode in _ALPHA_MODES or 'transparency' in im.info:
        rgba = im.convert('RGBA')
        out = Image.new('RGB', im.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel('A'))
        return out
    if im.mode.startswith('I') or im.mode == 'F':
        im = _to_8bit(im)
    return im.convert('RGB')


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit ('I;16*') scales by its type's range (65535 → 255), so relative brightness is kept
    across files. 32-bit int ('I') and float ('F') carry no range of their own: values already
    within 0..255 are kept, within 0..65535 are treated as 16-bit, float within 0..1 as
    fractions; anything else is stretched from its own min..max."""
    a = np.asarray(im).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith('I;16') or (im.mode == 'I' and lo >= 0 and 255 < hi <= 65535):
        a = a / 257.0
    elif im.mode == 'F' and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), 'L')


def is_ignored(name: str) -> bool:
    """Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`, ...) and OS clutter."""
    return name.startswith('.') or name in _IGNORED_NAMES


def check_image_file(path: str | os.PathLike, size: int | None = None) -> str | None:
    """Why `path` cannot be an image, or None. Cheap: the extension, the size, the first bytes.
    A truncated or corrupt image body is only found by decoding (`check_decodes`)."""
    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return 'not an image extension'
    if (os.path.getsize(path) if size is None else size) == 0:
        return 'zero bytes'
    with open(path, 'rb') as f:
        head = f.read(16)
    # Any format's signature: Pillow opens by content, so a PNG named .jpg is still an image.
    if any(accept(head) for accept in _ACCEPTS):
        return None
    if Path(path).suffix.lower() in _NO_SIGNATURE:
        try:  # the header only; `check_decodes` decodes the pixels
            with Image.open(path, formats=_FORMATS):
                return None
        except Exception:  # UnidentifiedImageError, or a header Pillow cannot parse
            pass
    return 'not an image (unrecognised file header)'


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


def _decode_problem(path: Path) -> str | None:
    try:
        open_image(path, draft_size=1)  # smallest JPEG scale: still reads every byte
    except (BadImageError, OSError) as e:
        return str(e.__cause__ or e)
    return None


def check_decodes(root: Path, fnames: Sequence[str], max_workers: int) -> list[tuple[str, str]]:
    """`(fname, reason)` for each file under `root` that does not decode, found in threads
    (PIL releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        problems = list(pool.map(_decode_problem, [root / f for f in fnames]))
    return [(f, why) for f, why in zip(fnames, problems) if why]


def apply_bad_file_policy(bad: Iterable[tuple[str, str]], on_bad_file: str, where: str) -> None:
    """`bad` holds `(fname, reason)`. 'raise': one error counting them and naming the first ten;
    'skip': one warning doing the same (the caller leaves them out)."""
    if on_bad_file not in _BAD_FILE_POLICIES:
        raise ValueError(f"on_bad_file must be one of {_BAD_FILE_POLICIES}, got {on_bad_file!r}")
    bad = list(bad)
    if not bad:
        return
    listing = '; '.join(f'{name} ({why})' for name, why in bad[:10])
    more = f'; and {len(bad) - 10} more' if len(bad) > 10 else ''
    if on_bad_file == 'raise':
        raise BadImageError(
            f"{len(bad)} file(s) under {where} are not usable images: {listing}{more}. Remove them "
            "from the folder (or the CSV), or pass on_bad_file='skip' to leave them out")
    warnings.warn(f"skipped {len(bad)} file(s) under {where} that are not usable images: "
                  f"{listing}{more} (on_bad_file='raise' makes this an error)", stacklevel=4)


def resize_file(src: Path, dst: Path, targ_sz: int) -> str:
    """Write `dst`, a copy of `src` whose shorter side is `targ_sz` (bilinear, upright, RGB);
    an image already that small is copied byte for byte. Returns 'skipped' when `dst` exists and
    is at least as new as `src`, else 'resized' or 'copied'. Written via a temporary file and
    `os.replace`, so an interrupted run never leaves a partial `dst`."""
    if src == dst:
        return 'skipped'
    if dst.exists() and dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return 'skipped'
    try:
        with Image.open(src) as probe:
            small, fmt = min(probe.size) <= targ_sz, probe.format
    except Exception as e:
        raise BadImageError(f"cannot decode image {os.fspath(src)!r} "
                            f"({type(e).__name__}: {e})") from e
    if small:
        with open(src, 'rb') as fsrc, atomic_write(dst) as fdst:
            shutil.copyfileobj(fsrc, fdst)
        return 'copied'
    im = open_image(src, draft_size=targ_sz)
    w, h = im.size
    scale = targ_sz / min(w, h)
    new = (max(targ_sz, round(w * scale)), max(targ_sz, round(h * scale)))
    im = im.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    save_fmt = Image.registered_extensions().get(dst.suffix.lower(), fmt or 'PNG')
    with atomic_write(dst) as f:
        im.save(f, format=save_fmt, **({'quality': 90} if save_fmt == 'JPEG' else {}))
    return 'resized'


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


def resize_dest(path: Path, new_path: str | os.PathLike, targ_sz: int) -> Path:
    """`path/new_path/targ_sz` (or `new_path/targ_sz` when absolute), created and proven
    writable."""
    base = Path(new_path)
    dest = (base if base.is_absolute() else path / base) / str(targ_sz)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / f'.write-test-{os.getpid()}'
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise type(e)(f"cannot write resized copies under {dest} ({e.strerror or e}); if {path} is "
                      f"read-only, pass an absolute new_path in a folder you can write, e.g. "
                      f"data.resize({targ_sz}, '/tmp/{path.name}')") from e
    return dest


def resize_one(job: tuple[Path, Path, int]) -> str | None:
    """The error of resizing one file, as text, or None."""
    try:
        resize_file(*job)
    except Exception as e:
        return f'{type(e).__name__}: {e}'
    return None
