"""The names the course notebooks got from `from fastai.torch_imports import *`: PyTorch's
pieces, `children`, the architectures by their course names, and `save_model`/`load_model`.

    from fastlearn.torch_imports import *
    m = nn.Sequential(*children(resnet34(True))[:-2], nn.Conv2d(512, 2, 3, padding=1))

A notebook convenience like `fastlearn.imports`: nothing inside the package imports it.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import FloatTensor, LongTensor, backends, cuda, nn, optim
from torch.autograd import Variable
from torch.nn import Parameter
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .archs import (convnext_tiny, dn121, efficientnet_b0, efficientnet_lite0, mobilenet_v3_large,
                    resnet18, resnet34, resnet50, resnet101, resnet152, resnext50, resnext101_64,
                    vgg16, wrn)
from .core import atomic_write, children

__all__ = ['torch', 'torchvision', 'nn', 'F', 'optim', 'cuda', 'backends', 'FloatTensor',
           'LongTensor', 'Variable', 'Parameter', 'Dataset', 'TensorDataset', 'DataLoader',
           'children', 'save_model', 'load_model',
           'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50',
           'resnext101_64', 'wrn', 'vgg16', 'dn121', 'efficientnet_b0', 'efficientnet_lite0',
           'mobilenet_v3_large', 'convnext_tiny']


def save_model(m: nn.Module, p: str | os.PathLike) -> None:
    """The course's `save_model(m, p)`: `m`'s weights to file `p`, written atomically."""
    with atomic_write(p) as f:
        torch.save(m.state_dict(), f)


def load_model(m: nn.Module, p: str | os.PathLike) -> None:
    """The course's `load_model(m, p)`: weights saved by `save_model` into `m` (tensors only:
    nothing is unpickled)."""
    if not os.path.isfile(p):
        raise FileNotFoundError(f'load_model: no file {os.fspath(p)!r}; '
                                'save one with save_model(m, p)')
    m.load_state_dict(torch.load(p, map_location='cpu', weights_only=True))
