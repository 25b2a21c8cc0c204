"""Pretrained weights as state dicts, from wherever they come: torchvision's weights API (the torch
hub cache, downloading once), a local `.pth` file, a state dict or a function returning one. Every
file is read tensors-only, so loading weights never runs code.

    sd = load_state_dict_file('models/resnet34.pth')
    sd = state_dict_from(torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 'resnet34')
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlparse

import torch
import torchvision.models as tvm

from .core import load_tensors

__all__ = ['WeightsUnavailableError', 'WeightsSource', 'StateDict', 'load_state_dict_file',
           'as_state_dict', 'state_dict_from', 'remap_positional']

StateDict = Mapping[str, torch.Tensor]
# A torchvision weights enum member, a file, a state dict, or a callable returning a state dict
# or a file.
WeightsSource = Union[tvm.WeightsEnum, str, os.PathLike, StateDict, Callable[[], Any], None]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says where they go."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `.pth` file, read with `torch.load(weights_only=True)`: tensors and
    plain containers only, so a file can never run code when it is loaded. A pickled object,
    a truncated file or another format is refused by name (`core.load_tensors`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    obj = load_tensors(path, written_by='torch.save(model.state_dict(), path)')
    return as_state_dict(obj, str(path))


def as_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and len(obj) == 1 and next(iter(obj)) in ('state_dict', 'model'):
        obj = next(iter(obj.values()))  # a checkpoint that wraps its state dict
    if not (isinstance(obj, Mapping) and obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise TypeError(f"weights from {source} must be a state dict (names -> tensors); "
                        f"got {type(obj).__name__}")
    if all(k.startswith('module.') for k in obj):  # saved from DataParallel/DDP
        return with_metadata({k[len('module.'):]: v for k, v in obj.items()}, obj)
    return with_metadata(dict(obj), obj)


def with_metadata(new: dict, old: Any) -> dict:
    """`new` (a renamed copy of `old`) with the module versions `old` records: BatchNorm's tell
    `load_state_dict` whether a checkpoint predates `num_batches_tracked`."""
    meta = getattr(old, '_metadata', None)
    if meta is None:
        return new
    new = OrderedDict(new)
    new._metadata = OrderedDict(  # type: ignore[attr-defined]  # torch's own plain attribute on state dicts
        (k.removeprefix('module.'), v) for k, v in meta.items())
    return new


# torchvision's old DenseNet checkpoints name layers 'norm.1'; its builder renames them on load.
_DENSENET_KEY = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.'
                           r'((?:[12])\.(?:weight|bias|running_mean|running_var))$')


def torchvision_state_dict(weights: tvm.WeightsEnum, name: str) -> dict[str, torch.Tensor]:
    """`weights` from the torch hub cache, downloading them once (torchvision's weights API)."""
    fname = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / 'checkpoints' / fname
    was_cached = cached.is_file()
    try:
        sd = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as e:
        if was_cached:
            raise
        raise WeightsUnavailableError(
            f"pretrained weights for {name} are not in the torch cache and could not be downloaded "
            f"({type(e).__name__}: {e}).\n"
            f"Put the file {fname} (from {weights.url}) at\n  {cached}\n"
            f"or pass weights='path/to/{fname}', or pretrained=False to start from random "
            f"weights.") from e
    return with_metadata({_DENSENET_KEY.sub(r'\1\2', k): v for k, v in sd.items()}, sd)


def state_dict_from(src: WeightsSource, name: str) -> dict[str, torch.Tensor]:
    if isinstance(src, tvm.WeightsEnum):
        return torchvision_state_dict(src, name)
    if callable(src):
        src = src()
    if isinstance(src, (str, os.PathLike)):
        return load_state_dict_file(src)
    return as_state_dict(src, f'the weights of {name}')


def remap_positional(src: StateDict, ref: StateDict, what: str) -> dict[str, torch.Tensor]:
    """`src`'s tensors under `ref`'s names, matched by position; every shape must agree."""
    if len(src) != len(ref):
        raise ValueError(f"{what}: the weights hold {len(src)} tensors but the model has "
                         f"{len(ref)}")
    out = {}
    for (ks, vs), (kr, vr) in zip(src.items(), ref.items()):
        if vs.shape != vr.shape:
            raise ValueError(f"{what}: weight {ks!r} {tuple(vs.shape)} does not fit model tensor "
                             f"{kr!r} {tuple(vr.shape)} at the same position")
        out[kr] = vs
    return out
