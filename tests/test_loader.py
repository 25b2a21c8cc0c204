"""The loader's workers: forks of the user's process that must not collect its garbage, and that
the parent's collector stops without waiting on them."""
from __future__ import annotations

import gc
import multiprocessing.process
import sys

import torch
from torch.utils.data import Dataset

from fastlearn.loader import Loader


class CollectsInWorker(Dataset):
    """Runs the garbage collector in the worker, as a busy worker's allocations eventually do."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        gc.collect()
        return torch.zeros(1)


class Cycle:
    """An earlier learner's iterator, in a reference cycle: freed only by the cyclic collector."""

    def __init__(self, iterator: object) -> None:
        self.iterator, self.me = iterator, self


def test_a_worker_leaves_an_earlier_loaders_iterator_to_the_parent(capfd, monkeypatch):
    # Python's own hook prints to the stderr that capfd reads; pytest's keeps a worker's to itself.
    monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
    earlier = Loader(CollectsInWorker(), batch_size=2, num_workers=1, persistent_workers=True)
    assert len(list(earlier)) == 2
    Cycle(earlier._iterator)
    del earlier
    gc.disable()  # still uncollected when the next loader's worker forks
    try:
        assert len(list(Loader(CollectsInWorker(), batch_size=2, num_workers=1))) == 2
    finally:
        gc.enable()
    assert gc.get_freeze_count() == 0  # the parent's objects are collectable again
    assert gc.collect() > 0  # and the parent collects the earlier iterator itself
    assert 'can only test a child process' not in capfd.readouterr().err


def test_the_collector_stops_a_forgotten_loaders_workers_without_waiting(monkeypatch):
    timed_out = []  # workers still alive when a join returned: torch waits 5 s on each, then kills it
    join = multiprocessing.process.BaseProcess.join

    def recording_join(self, timeout=None):
        join(self, timeout)
        if self.is_alive():
            timed_out.append(self.name)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, 'join', recording_join)
    for persistent in (True, False):
        loader = Loader(CollectsInWorker(), batch_size=1, num_workers=2, persistent_workers=persistent)
        it = iter(loader)
        next(it)
        workers = list(it._workers)
        Cycle(it)
        del loader, it
        gc.collect()
        assert not any(w.is_alive() for w in workers) and timed_out == []
