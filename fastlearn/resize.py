"""`data.resize(targ_sz)`'s per-file work: where the copies go, and one file's smaller copy,
written atomically so an interrupted run never leaves a partial image."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from .core import atomic_write
from .images import BadImageError, open_image

__all__ = ['resize_file']


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
