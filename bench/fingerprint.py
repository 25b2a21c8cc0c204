"""What a content check would add to the precompute cache key (issue 9, item 20).

    .venv/bin/python bench/fingerprint.py [--data ../shared/data/dogscats] [--repeats 5]

The key hashes each file's relative name, size and mtime (`FilesDataset.fingerprint`), and is
computed at every fit and every `learn.activations()`. Beside it, in the same process:

- stat + ctime + inode: the same `stat` call, more of its fields (what fastlearn now uses);
- head + tail: sha1 of each file's first and last 4 KiB as well;
- full hash: sha1 of every byte.

Warm: files in the page cache (a second epoch). Cold: each file's pages dropped first with
`posix_fadvise(DONTNEED)` (a fresh session on a disk; no root needed). Best of `--repeats`.
Nothing is written to the data folder.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
BLOCK = 4096


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob('*') if p.is_file())


def stat_only(fs: list[Path]) -> str:
    h = hashlib.sha1()
    for f in fs:
        st = os.stat(f)
        h.update(f'{f}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()


def stat_ctime(fs: list[Path]) -> str:
    h = hashlib.sha1()
    for f in fs:
        st = os.stat(f)
        h.update(f'{f}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n'.encode())
    return h.hexdigest()


def head_tail(fs: list[Path]) -> str:
    h = hashlib.sha1()
    for f in fs:
        with open(f, 'rb') as fh:
            size = os.fstat(fh.fileno()).st_size
            h.update(f'{f}\0{size}\n'.encode())
            h.update(fh.read(BLOCK))
            if size > BLOCK:
                fh.seek(max(BLOCK, size - BLOCK))
                h.update(fh.read(BLOCK))
    return h.hexdigest()


def full(fs: list[Path]) -> str:
    h = hashlib.sha1()
    for f in fs:
        with open(f, 'rb') as fh:
            h.update(fh.read())
    return h.hexdigest()


def drop_cache(fs: list[Path]) -> None:
    for f in fs:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def best(fn, fs: list[Path], repeats: int, cold: bool) -> float:
    times = []
    for _ in range(repeats):
        if cold:
            drop_cache(fs)
        t = time.perf_counter()
        fn(fs)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA)
    ap.add_argument('--repeats', type=int, default=5)
    args = ap.parse_args()
    fs = files(args.data)
    mb = sum(f.stat().st_size for f in fs) / 1e6
    print(f'{time.strftime("%Y-%m-%d %H:%M")}, load {os.getloadavg()[0]:.1f}: {len(fs)} files, '
          f'{mb:.0f} MB under {args.data}')
    for cold in (False, True):
        base = best(stat_only, fs, args.repeats, cold)
        print(f"{'cold' if cold else 'warm'}: name+size+mtime {base * 1e3:7.1f} ms (baseline)")
        for name, fn in (('+ ctime + inode', stat_ctime), ('+ head/tail 4 KiB sha1', head_tail),
                         ('full sha1', full)):
            t = best(fn, fs, args.repeats, cold)
            print(f'      {name:<22} {t * 1e3:7.1f} ms  ({t / base:5.1f}x baseline)')


if __name__ == '__main__':
    main()
