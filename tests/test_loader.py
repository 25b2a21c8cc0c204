"""The loader's workers: forks of the user's process that must not collect its garbage."""
from __future__ import annotations

import gc
import sys
import weakref

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
    def __init__(self, iterator: object) -> None:
        self.iterator, self.me = iterator, self


def test_a_worker_leaves_an_earlier_loaders_iterator_to_the_parent(capfd, monkeypatch):
    # Python's own hook prints to the stderr that capfd reads; pytest's keeps a worker's to itself.
    monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
    earlier = Loader(CollectsInWorker(), batch_size=2, num_workers=1, persistent_workers=True)
    assert len(list(earlier)) == 2
    cycle = Cycle(earlier._iterator)  # an earlier learner's iterator, in a reference cycle
    garbage = weakref.ref(cycle)
    del earlier, cycle
    gc.disable()  # still uncollected when the next loader's worker forks
    try:
        assert len(list(Loader(CollectsInWorker(), batch_size=2, num_workers=1))) == 2
        assert 'can only test a child process' not in capfd.readouterr().err
        assert gc.get_freeze_count() == 0  # the parent's objects are collectable again
    finally:
        garbage().__dict__.clear()  # (the cyclic collector would wait 5 s on the iterator's worker)
        gc.enable()
