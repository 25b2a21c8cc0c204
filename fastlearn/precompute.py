"""The precompute cache: the frozen body's pooled activations, computed once per image set.

fastai 0.7 keyed its cache on architecture name and size only, so a changed folder, split or
fine-tuned body silently reused stale features (users learned to delete `tmp/`). Here the key
covers everything that changes the activations, and a stale file is never served.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import atomic_write
from .model import predict_dl

__all__ = ['cache_key', 'weights_digest', 'compute_activations', 'cached_activations', 'ArrayLoader']

log = logging.getLogger(__name__)


def weights_digest(module: nn.Module) -> str:
    """A hash of every parameter and buffer, so a fine-tuned body gets a fresh cache."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b'')
    return h.hexdigest()


def cache_key(*, arch: str, weights: str, xtra_cut: int, sz: int | None, tfms: Any, dataset: Any) -> str:
    """One string per (architecture, body weights, cut, size, validation transforms, files+labels)."""
    parts = [arch, weights, str(xtra_cut), str(sz), repr(tfms), dataset.fingerprint()]
    return hashlib.sha1('\x00'.join(parts).encode()).hexdigest()[:16]


@torch.inference_mode()
def compute_activations(features: nn.Module, dl: Any, *, device: torch.device,
                        channels_last: bool = True) -> np.ndarray:
    """Run `features` (body, pool, flatten) in eval mode over `dl`: float32 (N, nf)."""
    acts, _ = predict_dl(features, dl, device=device, channels_last=channels_last)
    return acts.astype(np.float32, copy=False)


def cached_activations(features: nn.Module, dl: Any, folder: Path, prefix: str, key: str, *,
                       device: torch.device, channels_last: bool = True) -> np.ndarray:
    """Load `folder/prefix_key.npy`, or compute it and write it atomically.

    Older files with the same prefix and another key were computed from other files, weights or
    transforms: they are removed, since they can never be served again.
    """
    fname = folder / f'{prefix}_{key}.npy'
    if fname.exists():
        try:
            return np.load(fname, allow_pickle=False)
        except (OSError, ValueError) as e:  # a damaged cache file is recomputed, not trusted
            log.warning('precompute: %s is unreadable (%s); recomputing', fname, e)
    acts = compute_activations(features, dl, device=device, channels_last=channels_last)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f'{prefix}_*.npy'):
            stale.unlink()
        with atomic_write(fname) as f:
            np.save(f, acts, allow_pickle=False)
    except OSError as e:
        log.warning('precompute: could not write the cache to %s (%s); it is kept in memory only. '
                    "Pass tmp_name='/a/writable/folder' to keep it between sessions.", folder, e)
    return acts


class ArrayLoader:
    """Batches straight from in-memory arrays: cached activations need no workers or collate,
    and a per-item Dataset would cost more than the head's forward pass."""

    def __init__(self, x: np.ndarray, y: np.ndarray, bs: int, shuffle: bool = False, seed: int | None = None):
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y))
        self.bs, self.shuffle = bs, shuffle
        self._gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def __len__(self) -> int:
        n, bs = len(self.x), self.bs
        full, rest = divmod(n, bs)
        # A last batch of one would break BatchNorm in training, so it joins the previous one.
        return full + (1 if rest > 1 or (rest == 1 and not self.shuffle) or full == 0 else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        idx = torch.randperm(n, generator=self._gen) if self.shuffle else torch.arange(n)
        bounds = [i * self.bs for i in range(len(self))] + [n]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            b = idx[lo:hi]
            yield self.x[b], self.y[b]
