"""What fastlearn's `Loader` costs and saves beside torch's `DataLoader`.

    .venv/bin/python bench/loader.py [--loaders 2] [--workers 2]

Both in the same process, on a dataset of 64 small tensors:

- start: seconds to the first batch of a fresh loader (the workers fork; `Loader` freezes the
  parent's objects around the fork), mean over `--loaders` loaders;
- forgotten: seconds the cyclic garbage collector takes to free `--loaders` loaders whose
  iterators were left in a reference cycle (as a learner caught in a matplotlib traceback is).
  torch's iterator waits 5 s on each worker there (its index queues are closed before its
  shutdown message goes out); `Loader` keeps them open until it has gone.
"""
from __future__ import annotations

import argparse
import gc
import os
import time

import torch
from torch.utils.data import DataLoader, Dataset

from fastlearn.loader import Loader


class Small(Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((3, 8, 8), float(i))


class Cycle:
    def __init__(self, iterator: object) -> None:
        self.iterator, self.me = iterator, self


def measure(cls: type, n: int, workers: int) -> tuple[float, float]:
    """(mean seconds to a fresh loader's first batch, seconds to collect n forgotten loaders).
    The loaders stay referenced until all have started, so that no worker forks with garbage
    to collect (the other thing `Loader` mends; tests/test_loader.py shows it)."""
    iterators, start = [], 0.0
    for _ in range(n):
        loader = cls(Small(), batch_size=8, num_workers=workers, persistent_workers=True)
        t = time.perf_counter()
        iterators.append(iter(loader))
        next(iterators[-1])
        start += time.perf_counter() - t
    for it in iterators:
        Cycle(it)
    del loader, it, iterators
    t = time.perf_counter()
    gc.collect()
    return start / n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--loaders', type=int, default=2)
    ap.add_argument('--workers', type=int, default=2)
    args = ap.parse_args()
    print(f'{time.strftime("%Y-%m-%d %H:%M")}, load {os.getloadavg()[0]:.1f}: {args.loaders} loaders '
          f'of {args.workers} persistent workers each')
    gc.collect()
    base_start, base_forgotten = measure(DataLoader, args.loaders, args.workers)
    start, forgotten = measure(Loader, args.loaders, args.workers)
    print(f'start (to the first batch): DataLoader {base_start:.3f} s (baseline), Loader {start:.3f} s '
          f'({start / base_start:.2f}x)')
    print(f'forgotten (collected): DataLoader {base_forgotten:.2f} s (baseline), Loader {forgotten:.2f} s '
          f'({forgotten / base_forgotten:.3f}x)')


if __name__ == '__main__':
    main()
