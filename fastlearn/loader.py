"""The loader every data object hands out: torch's `DataLoader`, with worker processes that draw
their own augmentations and leave the parent's leftover objects alone.

    data = ImageClassifierData.from_paths(PATH, tfms=tfms)
    x, y = next(iter(data.trn_dl))          # a `Loader`: workers start here, then persist
"""
from __future__ import annotations

import gc
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = ['Loader', 'seed_worker']


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` for workers that augment with numpy: torch seeds torch and `random` in
    each worker, numpy it does not, so forked workers would share one numpy stream and apply
    identical "random" augmentations."""
    np.random.seed(torch.initial_seed() % 2 ** 32)


class Loader(DataLoader):
    """A `DataLoader` whose workers never run the parent's garbage collection.

    A worker is a fork of the notebook's or script's process, and inherits its uncollected
    garbage: an earlier learner's loader iterator left in a reference cycle (matplotlib's
    caught exceptions make such cycles). When the worker's own collector frees it, the iterator
    tries to stop workers that are not the worker's children and prints "Exception ignored in
    _MultiProcessingDataLoaderIter.__del__ ... can only test a child process". Objects frozen
    (`gc.freeze`) while the workers fork are never collected in them; the parent unfreezes
    them at once and collects its own garbage as usual."""

    def __iter__(self) -> Any:
        if not self.num_workers or gc.get_freeze_count():  # no fork, or the caller freezes already
            return super().__iter__()
        gc.freeze()
        try:
            return super().__iter__()
        finally:
            gc.unfreeze()
