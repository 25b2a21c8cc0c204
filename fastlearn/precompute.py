"""The precompute cache: the frozen body's pooled activations, computed once per image set.

fastai 0.7 keyed its cache on architecture name and size only, so a changed folder, split or
fine-tuned body silently reused stale features (users learned to delete `tmp/`). Here the key
covers everything that changes the activations, and a stale file is never served.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import atomic_write
from .distributed import all_agree, main_only
from .model import predict_dl
from .precision import FP32, Precision

__all__ = ['cache_key', 'weights_digest', 'BodyDigest', 'compute_activations', 'cached_activations',
           'check_informative', 'cache_prefix', 'ArrayLoader', 'head_threads']

log = logging.getLogger(__name__)


def weights_digest(module: nn.Module) -> str:
    """A hash of every parameter and buffer, so a fine-tuned body gets a fresh cache."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b'')
    return h.hexdigest()


def _version_stamp(module: nn.Module) -> tuple | None:
    """Identity, storage and autograd version counter of every tensor: they change with an
    optimizer step, `load_state_dict`, a BatchNorm update (`num_batches_tracked`) or any other
    in-place edit made outside `.data`. None when a tensor keeps no counter (inference tensors)."""
    try:
        return (id(module),) + tuple((id(t), t.data_ptr(), t._version)
                                     for t in chain(module.parameters(), module.buffers()))
    except RuntimeError:
        return None


class BodyDigest:
    """`weights_digest(body)`, remembered until the body may have changed.

    Hashing a body costs ~25 ms for EfficientNet-Lite0 and ~150 ms for a ResNet-50, more than a
    whole head epoch on cached activations, and the learner asks for the cache key at every
    fit. The digest is recomputed when the tensors' version counters move or after
    `invalidate()`, which the learner calls whenever it runs the full model in training (fused
    optimizers and BatchNorm kernels update tensors without moving the counters). An edit
    through `.data` moves nothing: call `invalidate()` after one.
    """

    def __init__(self) -> None:
        self._stamp: tuple | None = None
        self._digest = ''

    def __call__(self, module: nn.Module) -> str:
        stamp = _version_stamp(module)
        if stamp is None or stamp != self._stamp:
            self._digest, self._stamp = weights_digest(module), stamp
        return self._digest

    def invalidate(self) -> None:
        self._stamp = None


def cache_key(*, arch: str, weights: str, xtra_cut: int, sz: int | None, tfms: Any, dataset: Any,
              precision: Precision = FP32) -> str:
    """One string per (architecture, body weights, cut, size, validation transforms, files+labels,
    and autocast when on: bfloat16 activations are not float32's)."""
    parts = [arch, weights, str(xtra_cut), str(sz), repr(tfms), dataset.fingerprint()]
    parts += [precision.key()] if precision.key() else []
    return hashlib.sha1('\x00'.join(parts).encode()).hexdigest()[:16]


def cache_prefix(split: str, arch: str, xtra_cut: int, sz: int | None) -> str:
    """The file-name prefix of one split's cache, e.g. `x_act_trn_resnet34_0_224`; characters
    that are not safe in a file name (a timm hub name's '/' or ':') become '-'."""
    return f"x_act_{split}_{re.sub(r'[^A-Za-z0-9._+-]', '-', arch)}_{xtra_cut}_{sz}"


@torch.inference_mode()
def compute_activations(features: nn.Module, dl: Any, *, device: torch.device,
                        channels_last: bool = True, desc: str | None = None,
                        precision: Precision = FP32) -> np.ndarray:
    """Run `features` (body, pool, flatten) in eval mode over `dl`: float32 (N, nf); with
    `desc`, under a progress bar (the cache fill is the first long wait of a run). Several
    processes each compute a part and every one gets the whole."""
    # Iterating a loader draws its seed from torch's generator; forked, a run whose cache had to
    # be filled trains exactly as one that found it on disk (same seed, same numbers).
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        acts, _ = predict_dl(features, dl, device=device, channels_last=channels_last, desc=desc,
                             precision=precision)
    return acts.astype(np.float32, copy=False)


def _load(fname: Path, n: int) -> np.ndarray | None:
    """The cached array, or None when it is missing, unreadable or not `n` rows long."""
    if not fname.exists():
        return None
    try:
        acts = np.load(fname, allow_pickle=False)
    except (OSError, ValueError) as e:  # a damaged cache file is recomputed, not trusted
        log.warning('precompute: %s is unreadable (%s); recomputing', fname, e)
        return None
    if acts.ndim != 2 or len(acts) != n:
        log.warning('precompute: %s holds %s activations for %d images; recomputing',
                    fname, acts.shape, n)
        return None
    return acts


def cached_activations(features: nn.Module, dl: Any, folder: Path, prefix: str, key: str, *,
                       device: torch.device, channels_last: bool = True,
                       desc: str | None = None, precision: Precision = FP32,
                       check: Callable[[np.ndarray], object] | None = None) -> np.ndarray:
    """Load `folder/prefix_key.npy`, or compute it and write it atomically; `check(acts)` sees
    computed activations first and may raise, so that nothing it rejects is written (or loaded
    later).

    Older files with the same prefix and another key were computed from other files, weights or
    transforms: they are removed, since they can never be served again. Several processes read
    the file only if every one finds it; else they compute it together and rank 0 writes it.
    """
    fname = folder / f'{prefix}_{key}.npy'
    acts = _load(fname, len(dl.dataset))
    if all_agree(acts is not None) and acts is not None:  # (the second holds if the first does)
        return acts
    acts = compute_activations(features, dl, device=device, channels_last=channels_last, desc=desc,
                               precision=precision)
    if check is not None:
        check(acts)
    main_only(_store, acts, folder, prefix, fname)
    return acts


def check_informative(acts: np.ndarray, arch: str, sz: int | None) -> np.ndarray:
    """`acts`, the training images' activations, when they tell the images apart. A body whose
    maps die at a small size gives most images the same ones (EfficientNet-Lite0 at sz=32: all
    zero for 1,294 of the 1,302 photos), and the head could only learn the commonest class: a
    ValueError says so when one activation vector is shared by more than half the images."""
    same = max(Counter(row.tobytes() for row in acts).values(), default=0)
    if len(acts) > 1 and same > len(acts) / 2:
        raise ValueError(
            f'{arch} gives {same} of the {len(acts)} training images the same activations at '
            f'sz={sz}: nothing to train on. Use larger images, tfms_from_model({arch}, sz) with a '
            f'larger sz (the course uses 224), unless those images are copies of one picture')
    return acts


def _store(acts: np.ndarray, folder: Path, prefix: str, fname: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f'{prefix}_*.npy'):
            stale.unlink()
        with atomic_write(fname) as f:
            np.save(f, acts, allow_pickle=False)
    except OSError as e:
        log.warning('precompute: could not write the cache to %s (%s); it is kept in memory only. '
                    "Pass tmp_name='/a/writable/folder' to keep it between sessions.", folder, e)


@contextlib.contextmanager
def head_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread while a head trains on cached activations.

    A head's operations are small (microseconds each), so a second thread gains little, and on
    a busy machine every parallel region waits for a thread the scheduler has parked: a head
    epoch measured 2-12 s with 2 threads against 0.4 s with 1 on a loaded 2-core machine.
    Why not threadpoolctl's `threadpool_limits(1)`: it limits torch's OpenMP pool, yet the head
    epoch measured slower with it (bench/learner.py --only head, three runs each on a loaded
    2-core machine: fastlearn / hand loop, median of the runs' best ratios, 1.36x against 1.02x;
    main-process CPU 0.37-0.40 s against 0.32-0.39 s), so torch's own setting it is.
    """
    n = torch.get_num_threads()
    if device.type != 'cpu' or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class ArrayLoader:
    """Batches straight from in-memory arrays: cached activations need no workers or collate,
    and a per-item Dataset would cost more than the head's forward pass.

        trn = ArrayLoader(acts, y, bs=64, shuffle=True)

    With `shuffle`, a last batch of one item joins the batch before it (BatchNorm cannot train
    on one item); without, it stays a batch of its own (evaluation handles it).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, bs: int, shuffle: bool = False,
                 seed: int | None = None) -> None:
        if len(x) != len(y):
            raise ValueError(f'x has {len(x)} rows but y has {len(y)}; pass one label per row')
        if int(bs) < 1:
            raise ValueError(f'bs (batch size) must be at least 1, got {bs}')
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y))
        self.bs, self.shuffle = int(bs), shuffle
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.batch_sampler: Any = _ArrayBatches(len(self.x), self.bs, shuffle, gen)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.batch_sampler:
            yield self.x[b], self.y[b]

    def with_batch_sampler(self, batch_sampler: Any) -> 'ArrayLoader':
        """The same arrays read in the batches of row indices that `batch_sampler` yields (how
        each of several processes reads its share)."""
        dl = copy.copy(self)
        dl.batch_sampler = batch_sampler
        return dl


class _ArrayBatches:
    """The batches an `ArrayLoader` reads: slices in order (views, no copy), or index tensors
    of a fresh permutation each epoch."""

    def __init__(self, n: int, bs: int, shuffle: bool, gen: torch.Generator | None) -> None:
        self.n, self.bs, self.shuffle, self.gen = n, bs, shuffle, gen

    def sizes(self) -> list[int]:
        full, rest = divmod(self.n, self.bs)
        if self.n == 0:
            return []
        if rest == 1 and self.shuffle and full:  # a last batch of one joins the one before
            return [self.bs] * (full - 1) + [self.bs + 1]
        return [self.bs] * full + ([rest] if rest else [])

    def __len__(self) -> int:
        return len(self.sizes())

    def __iter__(self) -> Iterator[Any]:
        idx = torch.randperm(self.n, generator=self.gen) if self.shuffle and self.n else None
        lo = 0
        for size in self.sizes():
            yield slice(lo, lo + size) if idx is None else idx[lo:lo + size]
            lo += size
