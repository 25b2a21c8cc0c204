"""One image file: `open_image` (upright RGB, bounded in pixels), cheap up-front checks of a file,
decoding checks and the bad-file policy. Finding a data set's files is `sources.py`; resized copies
are `resize.py`."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

__all__ = ['open_image', 'BadImageError', 'TooLargeImageError', 'MAX_PIXELS', 'IMAGE_EXTENSIONS',
           'check_image_file']

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

