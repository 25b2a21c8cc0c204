"""The loader every data object hands out: torch's `DataLoader`, with worker processes that draw
their own augmentations, leave the parent's leftover objects alone, and stop at once when a
forgotten learner is garbage-collected (bench/loader.py measures it).

    data = ImageClassifierData.from_paths(PATH, tfms=tfms)
    x, y = next(iter(data.trn_dl))          # a `Loader`: workers start here, then persist
"""
from __future__ import annotations

import gc
import weakref
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


# Each worker-backed iterator's index queues, reachable from here for as long as it lives.
_QUEUES: dict[int, list] = {}


def _keep_queues(it: Any) -> None:
    """When the cyclic collector frees an iterator, it runs the queues' own finalizers (which
    stop their feeder threads) before the iterator's `__del__`, whose "stop" message to each
    worker is then never sent: the worker is joined for 5 s and terminated. Queues held here are
    not part of that garbage, so the message goes out and the worker exits at once."""
    queues = getattr(it, '_index_queues', None)  # (torch's private name; without it, as before)
    if queues and id(it) not in _QUEUES:
        _QUEUES[id(it)] = list(queues)
        weakref.finalize(it, _QUEUES.pop, id(it), None)


class Loader(DataLoader):
    """A `DataLoader` whose workers leave the parent's garbage alone, and that the parent's
    garbage collector shuts down without a wait.

    A worker is a fork of the notebook's or script's process, and inherits its uncollected
    garbage: an earlier learner's loader iterator left in a reference cycle (matplotlib's
    caught exceptions make such cycles). When the worker's own collector frees it, the iterator
    tries to stop workers that are not the worker's children and prints "Exception ignored in
    _MultiProcessingDataLoaderIter.__del__ ... can only test a child process". Objects frozen
    (`gc.freeze`) while the workers fork are never collected in them; the parent unfreezes
    them at once and collects its own garbage as usual."""

    def __iter__(self) -> Any:
        freeze = self.num_workers > 0 and not gc.get_freeze_count()  # (unless the caller freezes)
        if freeze:
            gc.freeze()
        try:
            it = super().__iter__()
        finally:
            if freeze:
                gc.unfreeze()
        _keep_queues(it)
        return it
