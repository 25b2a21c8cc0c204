"""Training on several processes and machines: `torch.distributed`, as `torchrun` starts it.

    torchrun --standalone --nproc_per_node=2 train.py        # the course's script, unchanged
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py

Under a launcher (its `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` in the environment, and
more than one process) the learner starts the process group (gloo on the CPU, NCCL for CUDA
tensors) and the training loop calls the hooks below: each global batch is split across the
processes, the trained module runs under `DistributedDataParallel`, the losses and validation
metrics are reduced over all processes, predictions are computed in shards and gathered, and
only rank 0 shows progress and writes files while the others wait for its result (or its
error). Outside a launcher every hook returns at once and changes nothing. docs/distributed.md
has the commands, what is sharded and the measured cost.
"""
from __future__ import annotations

import atexit
import os
import pickle
import warnings
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .core import default_device

__all__ = ['launched', 'init_distributed', 'world_size', 'rank', 'is_main', 'process_device',
           'sync_module', 'wrap_model', 'shard_train', 'shard_eval', 'mean_over_ranks',
           'sum_over_ranks', 'gather_rows', 'all_agree', 'main_only', 'describe', 'main_only_callback',
           'DEFAULT_TIMEOUT', 'MIN_PER_PROCESS']

_LAUNCHER_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
# Long enough for rank 0 to write a model, an export or a cache while the others wait; short
# enough that a process stuck outside a collective ends the run instead of hanging it.
DEFAULT_TIMEOUT = 600.0
# BatchNorm cannot train on one item, so every process gets at least two of each batch.
MIN_PER_PROCESS = 2

_solo = False  # rank 0 inside main_only: collectives are off until it returns
_shards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> its shards, kept
# with the loader so that persistent workers live as long as it does


def launched() -> bool:
    """Did a launcher (torchrun, or anything that sets its environment) start this process as
    one of several?"""
    return all(k in os.environ for k in _LAUNCHER_ENV) and int(os.environ['WORLD_SIZE']) > 1


def _timeout() -> float:
    text = os.environ.get('FASTLEARN_DIST_TIMEOUT')
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f'FASTLEARN_DIST_TIMEOUT must be a number of seconds > 0, got {text!r}; '
                         'e.g. FASTLEARN_DIST_TIMEOUT=120')
    return value


def init_distributed(*, backend: str | None = None, timeout: float | None = None) -> int:
    """Start the process group from the launcher's environment (done by the learner itself; call
    this first only to choose the backend or the timeout) and return the number of processes.

        init_distributed(timeout=120)     # seconds a process waits for the others

    The backend is gloo, plus NCCL for CUDA tensors where CUDA is present. `timeout` defaults
    to `FASTLEARN_DIST_TIMEOUT` or 600 s. A group the script started itself is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if not launched():
        raise RuntimeError('this process was not started by a launcher for several processes (no '
                           'RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT with WORLD_SIZE > 1); start '
                           'the script with torchrun --standalone --nproc_per_node=2 script.py')
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    backend = backend or ('cpu:gloo,cuda:nccl' if torch.cuda.is_available() else 'gloo')
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout or _timeout()))
    atexit.register(_shutdown)
    if dist.get_rank() != 0:
        # Rank 0 runs the same script and shows the same warnings once.
        warnings.simplefilter('ignore')
    return dist.get_world_size()


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    """Do several processes train together (and is this not rank 0 working alone)?"""
    if _solo:
        return False
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if launched():
        init_distributed()
        return True
    return False


def world_size() -> int:
    """How many processes train together (1 outside a launcher)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank (0 outside a launcher)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ['RANK']) if launched() else 0


def is_main() -> bool:
    """Is this the process that prints and writes (rank 0, or the only one)?"""
    return rank() == 0


def describe() -> str | None:
    """'2 processes (torch.distributed, gloo)', or None for one process (nothing to say)."""
    if not _active():
        return None
    return f'{dist.get_world_size()} processes (torch.distributed, {dist.get_backend()})'


def process_device(device: torch.device | str | None = None) -> torch.device:
    """The device this process trains on: `device`, else a GPU, Apple's MPS or the CPU; under a
    launcher `cuda` means this process's own GPU (`cuda:LOCAL_RANK`), and the process group
    starts here. On CUDA, cuDNN picks its fastest kernels for the shapes it sees (benchmark)."""
    d = torch.device(device) if device is not None else default_device()
    if launched():
        if d.type == 'cuda' and d.index is None:
            d = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        init_distributed()
    if d.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    return d


def _comm_device() -> torch.device:
    """Where small reductions run: NCCL takes only CUDA tensors."""
    return torch.device('cuda', torch.cuda.current_device()) if 'nccl' in str(dist.get_backend()) \
        else torch.device('cpu')


def sync_module(module: nn.Module) -> None:
    """Give every process rank 0's weights and buffers (a fresh head is random per process)."""
    if not _active():
        return
    with torch.no_grad():
        for t in chain(module.parameters(), module.buffers()):
            buf = t.detach().contiguous()  # channels-last weights go as plain contiguous copies
            dist.broadcast(buf, 0)
            if buf.data_ptr() != t.data_ptr():
                t.copy_(buf)


def wrap_model(model: nn.Module) -> nn.Module:
    """`model` under `DistributedDataParallel` (gradients averaged over the processes during
    backward) when several processes train it; `model` itself otherwise."""
    if not _active() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel
    p = next(model.parameters())
    return DistributedDataParallel(model, device_ids=[p.device.index] if p.device.type == 'cuda' else None)


def mean_over_ranks(value: float, n: int) -> float:
    """The mean over every process of a per-item mean `value` taken over `n` items: a batch loss
    becomes the global batch's loss, the same number in every process."""
    if not _active():
        return value
    t = torch.tensor([value * n, float(n)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return (t[0] / t[1]).item() if t[1] > 0 else value


def sum_over_ranks(a: np.ndarray) -> np.ndarray:
    """`a` summed over every process."""
    if not _active():
        return a
    t = torch.as_tensor(np.asarray(a, np.float64), device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def all_agree(flag: bool) -> bool:
    """True in every process only if `flag` is true in every process (one collective decision,
    e.g. whether each one found the cache)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_rows(a: np.ndarray) -> np.ndarray:
    """Every process's rows of `a`, concatenated in rank order (a process may have none)."""
    if not _active():
        return a
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, a)
    full = [p for p in parts if p.size] or parts[:1]
    return np.concatenate(full)


def main_only(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in rank 0 only; every process returns its result, or raises its
    error, so none waits for a process that failed. Writing files goes through here.

        path = main_only(write_model, state, path)
    """
    global _solo
    if not _active():
        return fn(*args, **kwargs)
    result, error = None, None
    if is_main():
        _solo = True  # what fn calls runs here alone: no collective may wait for the others
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - handed to the other processes, then raised
            error = e
        finally:
            _solo = False
    box = [(result, _portable(error))]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    result, error = box[0]
    if error is not None:
        raise error
    return result


def _portable(e: Exception | None) -> Exception | None:
    """An exception that survives pickling to the other processes (else a RuntimeError naming it)."""
    if e is None:
        return None
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any exception that does not round-trip
        return RuntimeError(f'rank 0 failed: {type(e).__name__}: {e}')


def main_only_callback(cb: Any) -> bool:
    """Should the loop skip callback `cb` in this process? Callbacks that write files (their
    class sets `main_only = True`, as `CSVLogger` does) run in rank 0 only."""
    return bool(getattr(cb, 'main_only', False)) and not is_main()


# --- sharding loaders --------------------------------------------------------------------------
def _batch_sizes(dl: Any) -> list[int] | None:
    """Sizes of the batches a torch `DataLoader` (with a batch size) or an `ArrayLoader` gives,
    or None for a loader whose batches are not known in advance."""
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset
    if isinstance(dl, DataLoader):
        if (dl.batch_size is None or type(dl.batch_sampler) is not BatchSampler
                or isinstance(dl.sampler, DistributedSampler) or isinstance(dl.dataset, IterableDataset)):
            return None
        full, rest = divmod(len(dl.sampler), dl.batch_size)  # type: ignore[arg-type]  # Sampler's type has no __len__
        return [dl.batch_size] * full + ([rest] if rest and not dl.drop_last else [])
    sizes = getattr(getattr(dl, 'batch_sampler', None), 'sizes', None)
    return sizes() if callable(sizes) and hasattr(dl, 'with_batch_sampler') else None


def _indices(batch: Any) -> list[int]:
    if isinstance(batch, slice):
        return list(range(batch.start, batch.stop))
    return [int(i) for i in batch]


class _TrainShard:
    """This process's share of every global batch: rank 0 draws the epoch's batches from the
    loader's own sampler (so a seeded run shuffles as one process does), sends them to all, and
    each process takes its slice. A last batch too small to give every process
    `MIN_PER_PROCESS` items is left out, so every process runs the same number of steps."""

    def __init__(self, batch_sampler: Any, sizes: list[int], rank: int, world: int) -> None:
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world
        self.min_size = MIN_PER_PROCESS * world
        self.n = sum(s >= self.min_size for s in sizes)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[list[int]]:
        box = [[_indices(b) for b in self.batch_sampler] if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        for b in box[0] or []:  # (a list in every process after the broadcast)
            if len(b) >= self.min_size:
                yield np.array_split(np.asarray(b), self.world)[self.rank].tolist()


class _EvalShard:
    """This process's contiguous part of `range(n)` in batches of `bs`; concatenating the ranks'
    outputs in rank order gives the loader's order back."""

    def __init__(self, n: int, bs: int, rank: int, world: int) -> None:
        self.lo, self.hi, self.bs = n * rank // world, n * (rank + 1) // world, bs

    def __len__(self) -> int:
        return -(-(self.hi - self.lo) // self.bs)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.lo, self.hi, self.bs):
            yield list(range(i, min(i + self.bs, self.hi)))


def _with_batches(dl: Any, batch_sampler: Any) -> Any:
    """The same loader (dataset, workers, collate, pinning) reading `batch_sampler`'s batches."""
    from torch.utils.data import DataLoader
    if not isinstance(dl, DataLoader):
        return dl.with_batch_sampler(batch_sampler)
    return type(dl)(dl.dataset, batch_sampler=batch_sampler, num_workers=dl.num_workers,
                    collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, timeout=dl.timeout,
                    worker_init_fn=dl.worker_init_fn, generator=dl.generator,
                    multiprocessing_context=dl.multiprocessing_context,
                    prefetch_factor=dl.prefetch_factor if dl.num_workers else None,
                    persistent_workers=dl.persistent_workers)


def _cached(dl: Any, kind: str, make: Callable[[], Any]) -> Any:
    try:
        per_loader = _shards.setdefault(dl, {})
    except TypeError:  # not weak-referenceable: build it each time
        return make()
    key = (kind, dist.get_world_size(), dist.get_rank())
    if key not in per_loader:
        per_loader[key] = make()
    return per_loader[key]


def shard_train(dl: Any) -> Any:
    """The loader a process trains on: its share of each of `dl`'s batches, so the processes
    together see the batches one process would (`dl` itself outside a launcher, and for loaders
    whose batches are not known in advance, such as one built on a DistributedSampler)."""
    sizes = _batch_sizes(dl) if _active() else None
    if sizes is None:
        return dl
    world = dist.get_world_size()
    if not any(s >= MIN_PER_PROCESS * world for s in sizes):
        raise ValueError(f'batches of {max(sizes, default=0)} cannot be shared by {world} processes: '
                         f'each needs at least {MIN_PER_PROCESS} items (BatchNorm trains on no fewer); '
                         f'use bs of at least {MIN_PER_PROCESS * world} or fewer processes')
    return _cached(dl, 'train', lambda: _with_batches(
        dl, _TrainShard(dl.batch_sampler, sizes, dist.get_rank(), world)))


def shard_eval(dl: Any) -> tuple[Any, bool]:
    """`(loader, sharded)`: this process's contiguous part of an in-order loader, to be gathered
    (`gather_rows`) or summed (`sum_over_ranks`) afterwards; `(dl, False)` when one process
    trains or the loader is not in order."""
    if not _active():
        return dl, False
    from torch.utils.data import DataLoader, SequentialSampler
    if isinstance(dl, DataLoader):
        ok = dl.batch_size is not None and isinstance(dl.sampler, SequentialSampler)
        n, bs = (len(dl.dataset), dl.batch_size or 0) if ok else (0, 0)  # type: ignore[arg-type]  # Dataset's type has no __len__
    else:
        ok = hasattr(dl, 'with_batch_sampler') and not getattr(dl, 'shuffle', True)
        n, bs = (len(dl.x), dl.bs) if ok else (0, 0)
    if not ok:
        return dl, False
    return _cached(dl, 'eval', lambda: _with_batches(
        dl, _EvalShard(n, bs, dist.get_rank(), dist.get_world_size()))), True
