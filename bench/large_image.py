"""Peak memory of decoding one very large photo, bounded (`MAX_PIXELS`) and not (issue 9).

    .venv/bin/python bench/large_image.py [--side 12000] [--draft-size 224]

Writes a `side`x`side` JPEG and PNG to a temporary folder, then decodes each in a fresh process
with `open_image` and prints its peak resident memory (`VmHWM`) beside its resident memory just
before the decode (`import fastlearn`, hence torch, included; importing torch itself peaks
at ~0.7 GB for a moment, so the figure that counts is the peak's growth past that), with the library's limit
and with the limit lifted (`MAX_PIXELS = inf`, how every file was decoded before). A loader worker holds one
such decode at a time, so multiply by the workers (8 at most by default).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import math, resource, sys, warnings
from fastlearn import images
warnings.simplefilter('ignore')                     # PIL's DecompressionBombWarning
path, limit, draft = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
if limit == 'inf':
    images.MAX_PIXELS = math.inf
import gc; gc.collect()
# resident now (import torch peaks higher for a moment, which ru_maxrss would keep)
before = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:'))
try:
    size = images.open_image(path, draft).size
except images.TooLargeImageError:
    size = 'refused'
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print(f'{size}\t{before / 1024:.0f}\t{max(peak, hwm) / 1024:.0f}')
'''


MAKE = r'''
import sys
import numpy as np
from PIL import Image
folder, side = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
small = Image.fromarray(rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8))
big = small.resize((side, side), Image.Resampling.BILINEAR)
big.save(f'{folder}/big.jpg', quality=85)
big.save(f'{folder}/big.png', compress_level=1)
'''


def make(folder: Path, side: int) -> list[Path]:
    # In its own process: Linux carries a parent's peak memory into a child's ru_maxrss, so the
    # process that measures must never have held the big array.
    subprocess.run([sys.executable, '-c', MAKE, str(folder), str(side)], check=True)
    return [folder / 'big.jpg', folder / 'big.png']


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--side', type=int, default=12000)
    ap.add_argument('--draft-size', type=int, default=0, help='0: no draft size (as check_images '
                    'and resize do not use); 224: what a sz-224 loader asks for')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for f in make(Path(tmp), args.side):
            for limit in ('default', 'inf'):
                out = subprocess.run([sys.executable, '-c', CHILD, str(f), limit,
                                      str(args.draft_size)], capture_output=True, text=True,
                                     check=True).stdout.strip().split('\t')
                print(f'{f.suffix[1:]:>4} {args.side}x{args.side}, limit {limit:>7}: decoded size '
                      f'{out[0]:>14}, peak {out[2]:>5} MB, resident before the decode {out[1]} MB')


if __name__ == '__main__':
    main()
