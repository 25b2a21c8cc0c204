"""`ConvLearner.pretrained` and the names the course's `from fastlearn.conv_learner import *` gives.

    from fastlearn.conv_learner import *
    data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet34, 224,
                                          aug_tfms=transforms_side_on, max_zoom=1.1))
    learn = ConvLearner.pretrained(resnet34, data, precompute=True)
    learn.fit(1e-2, 1)

Besides the library's names, the star gives what the course's lessons used from this import
alone (lesson 2, lesson 7): `np`, `plt`, `os`, `glob` (the function), `Path`, `torch`, `nn`, `F`,
`Variable`, `V`, `T`, `to_np`, `children`, `Flatten`, `open_image`. docs/course.md lists them.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from glob import glob
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Variable

from .archs import (arch_for, convnext_tiny, dn121, efficientnet_b0, efficientnet_lite0, get_body,
                    layer_groups, mobilenet_v3_large, resnet18, resnet34, resnet50, resnet101,
                    resnet152, resnext50, resnext101_64, vgg16, wrn)
from .core import VV, T, V, children, to_gpu, to_np, user_stacklevel
from .data_block import ImageFileList, ImageItemList, SegmentationItemList
from .core import set_seed
from .dataset import ImageClassifierData, get_cv_idxs
from .distributed import main_only
from .export import export_learner, load_learner
from .images import open_image
from .layers import Flatten, create_head, num_features, pool_flatten
from .learner import Learner
from .metrics import accuracy, accuracy_np, accuracy_thresh, f2, fbeta, opt_th
from .model import predict_dl
from .plots import ImageModelResults, plot_confusion_matrix
from .seg_learner import UnetLearner, unet_learner
from .regression import L1LossFlat, MSELossFlat, points_size, transformed_points
from .precompute import (ArrayLoader, BodyDigest, cache_key, cache_prefix, cached_activations,
                         check_informative, head_threads)
from .transforms import (CropType, TfmType, imagenet_stats, tfms_from_model, tfms_from_stats,
                         transforms_basic, transforms_side_on, transforms_top_down)

__all__ = ['ConvLearner', 'Learner', 'ImageClassifierData', 'get_cv_idxs', 'tfms_from_model',
           'tfms_from_stats', 'transforms_basic', 'transforms_side_on', 'transforms_top_down',
           'CropType', 'TfmType', 'imagenet_stats', 'accuracy', 'accuracy_thresh', 'np', 'load_learner',
           # the lesson's last steps (interpretation) and a reproducible run, without a second import
           'set_seed', 'plot_confusion_matrix', 'ImageModelResults',
           'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50', 'wrn', 'vgg16',
           'dn121', 'efficientnet_b0', 'efficientnet_lite0', 'mobilenet_v3_large', 'convnext_tiny',
           'resnext101_64', 'accuracy_np', 'f2', 'fbeta', 'opt_th', 'open_image',
           'plt', 'os',  # noqa: F822 (`plt` comes from the module __getattr__ below, loaded lazily)
           'glob', 'Path', 'torch', 'nn', 'F', 'Variable', 'V', 'T', 'VV', 'to_np',
           'to_gpu', 'children', 'Flatten', 'ImageFileList', 'ImageItemList',
           'SegmentationItemList', 'unet_learner', 'UnetLearner', 'MSELossFlat', 'L1LossFlat']


def __getattr__(name: str) -> Any:
    # `plt` is in the course's star but loads matplotlib, which `import fastlearn` should not.
    if name == 'plt':
        import matplotlib.pyplot as plt
        return plt
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


_SPLITS = {'trn': ('trn_ds', 'fix_dl'), 'val': ('val_ds', 'val_dl'), 'test': ('test_ds', 'test_dl')}


class ConvLearner(Learner):
    """A pretrained convolutional body, pooled, under a new head; optionally trained on the
    body's cached activations (`precompute=True`)."""

    def __init__(self, data: Any, model: nn.Module, layer_groups: Sequence[nn.Module], *,
                 arch_name: str, xtra_cut: int = 0, **kwargs: Any) -> None:
        super().__init__(data, model, layer_groups, **kwargs)
        self.arch_name, self.xtra_cut = arch_name, xtra_cut
        self._precompute = False
        self._acts: dict[tuple[str, str], np.ndarray] = {}
        self._warned_aug = False
        self._digest = BodyDigest()  # the body's weights hash, kept while the body cannot change
        self.head_config: dict | None = None  # ps and xtra_fc of a standard head, for export

    @classmethod
    def pretrained(cls, f: Any, data: Any, ps: float | Sequence[float] | None = None,
                   xtra_fc: Sequence[int] | None = None, xtra_cut: int = 0,
                   custom_head: nn.Module | None = None, precompute: bool = False,
                   pretrained: bool = True, *, weights: Any = None, cut: Any = None,
                   **kwargs: Any) -> 'ConvLearner':
        """`ConvLearner.pretrained(resnet34, data, precompute=True)`: the architecture `f` (a
        course name such as `resnet34`, a timm model name, or any module with `cut=`) cut before
        its pooling, then concat pooling and a new head for `data.c` outputs. Only the head
        trains until `unfreeze()`. `weights=` takes a local file or a state dict."""
        arch = arch_for(f, cut=cut)
        body = get_body(arch, pretrained=pretrained, weights=weights, xtra_cut=xtra_cut)
        pool: nn.Module
        if custom_head is not None:
            pool, head = nn.Identity(), custom_head
        else:
            pool = pool_flatten()
            head = create_head(2 * num_features(body), data.c, ps=ps, xtra_fc=xtra_fc,
                               is_multi=data.is_multi, is_reg=data.is_reg)
        model = nn.Sequential(OrderedDict(body=body, pool=pool, head=head))
        groups = layer_groups(body, head, arch)
        if arch.body_clip is not None:  # the table's fine-tuning settings (archs.py says why)
            kwargs.setdefault('clip', [arch.body_clip] * (len(groups) - 1) + [None])
        learn = cls(data, model, groups, arch_name=arch.name, xtra_cut=xtra_cut, **kwargs)
        learn.bn_freeze(arch.bn_freeze)
        if custom_head is None:
            learn.head_config = {'ps': ps, 'xtra_fc': None if xtra_fc is None else list(xtra_fc)}
        learn.freeze()
        learn._set_precompute(precompute)
        return learn

    @classmethod
    def from_model_data(cls, m: nn.Module, data: Any, **kwargs: Any) -> 'ConvLearner':
        """`learn = ConvLearner.from_model_data(m, data)`: a learner for your own module, as
        in lesson 7, with one layer group per child of `m` (so `learn.freeze_to(-4)` trains
        the last four children) and every group trainable. Precompute needs a body and head
        from `pretrained`; here it stays off."""
        groups = children(m)
        if not groups:
            raise ValueError(f'from_model_data makes one layer group per child of the model, but '
                             f'{type(m).__name__} has no children; wrap it: nn.Sequential(m)')
        learn = cls(data, m, groups, arch_name=type(m).__name__, **kwargs)
        learn.unfreeze()
        return learn

    def export(self, fname: str) -> Any:
        """Write weights plus what prediction needs (architecture, classes, size, stats,
        transforms) to one file that `load_learner(fname)` opens without the training data."""
        return export_learner(self, fname)

    # --- precompute --------------------------------------------------------------------------
    @property
    def precompute(self) -> bool:
        """When True, fit, lr_find and predict run the head on the body's cached activations."""
        return self._precompute

    @precompute.setter
    def precompute(self, on: bool) -> None:
        self._set_precompute(on)

    def _set_precompute(self, on: bool) -> None:
        if on and not all(hasattr(self.model, k) for k in ('body', 'pool', 'head')):
            raise ValueError('precompute=True caches the activations of a body under a head, as '
                             'ConvLearner.pretrained builds them; this model (from_model_data) has '
                             'none: leave precompute off')
        if on and any(self.trainable_groups()[:-1]):
            raise ValueError('precompute=True needs a frozen body (the cache holds its activations); '
                             'call learn.freeze() first')
        if on and not self._warned_aug:
            warnings.warn('precompute=True: the head trains on cached activations of un-augmented '
                          'images, so aug_tfms have no effect; set learn.precompute = False to train '
                          'with augmentation', stacklevel=user_stacklevel())
            self._warned_aug = True
        self._precompute = bool(on)

    def activations(self, split: str = 'trn') -> np.ndarray:
        """The body's pooled activations for 'trn' (read through `fix_dl`), 'val' or 'test',
        from memory, from `tmp/`, or computed now; recomputed whenever the key changes (files,
        labels, size, validation transforms, body weights).

            acts = learn.activations('val')     # (N, 2 * features) float32
        """
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        dl = getattr(self.data, _SPLITS[split][1])
        if dl is None:
            raise ValueError(f'there is no {split} set: pass test_name= when building the data')
        ds = dl.dataset  # for 'trn' the train images under validation transforms
        # repr(body) holds layer settings (BatchNorm eps, ...) that the weights digest does not.
        body: nn.Module = self.model.body  # type: ignore[assignment]  # a child: torch types it Tensor | Module
        # A custom head sees the body's unpooled maps: its pool (Identity) is part of the key.
        pool = '' if self.head_config is not None else f'\n{self.model.pool!r}'
        key = cache_key(arch=f'{self.arch_name}\n{body!r}{pool}', weights=self._digest(body),
                        xtra_cut=self.xtra_cut, sz=self.data.sz, tfms=ds.transform, dataset=ds,
                        precision=self.precision)
        if (split, key) not in self._acts:
            features = nn.Sequential(body, self.model.pool)  # type: ignore[arg-type]  # (a child, as body)
            self._acts = {k: v for k, v in self._acts.items() if k[0] != split}
            prefix = cache_prefix(split, self.arch_name, self.xtra_cut, self.data.sz)
            informative = partial(check_informative, arch=self.arch_name, sz=self.data.sz)
            self._acts[split, key] = cached_activations(
                features, dl, self.tmp_path, prefix, key, device=self.device,
                channels_last=self.channels_last, desc=None if self.quiet else f'precompute {split}',
                precision=self.precision, check=informative if split == 'trn' else None)
        return self._acts[split, key]

    def get_activations(self, force: bool = False) -> list[np.ndarray | None]:
        """The course's `learn.get_activations()`: `[trn, val, test]` activations of the body
        (test is None without a test set), from the cache or computed now; `force=True`
        recomputes them. The cache is keyed by files, size, transforms and weights, so it is
        never stale and `force` is rarely needed."""
        if not all(hasattr(self.model, k) for k in ('body', 'pool', 'head')):
            raise ValueError('get_activations needs the body and head that ConvLearner.pretrained '
                             'builds; this model (from_model_data) has none')
        if force:
            self._acts.clear()
            main_only(self._remove_cache)
        return [self.activations(s) if s != 'test' or self.data.test_dl is not None else None
                for s in _SPLITS]

    def _remove_cache(self) -> None:
        for split in _SPLITS:
            prefix = cache_prefix(split, self.arch_name, self.xtra_cut, self.data.sz)
            for f in (self.tmp_path.glob(f'{prefix}_*.npy') if self.tmp_path.is_dir() else ()):
                f.unlink()

    def save_fc1(self) -> None:
        """The course's `learn.save_fc1()`: compute (or find) and store under `tmp/` the body's
        activations for the train, valid and test sets, so that `precompute=True` starts at once."""
        self.get_activations()

    def _training_setup(self) -> tuple[nn.Module, Any, Any]:
        if not self._precompute:
            return super()._training_setup()
        bs = self.data.bs
        trn = ArrayLoader(self.activations('trn'), self._targets(self.data.fix_ds), bs, shuffle=True)
        val = ArrayLoader(self.activations('val'), self._targets(self.data.val_ds), bs)
        return self.model.head, trn, val  # type: ignore[return-value]  # a child: typed Tensor | Module

    def _targets(self, ds: Any) -> np.ndarray:
        """The targets beside cached activations: labels as they are, but points as the
        validation transform moves them (the cache holds un-augmented images at data.sz)."""
        points = points_size(self.data) is not None and np.ndim(ds.y) == 3
        return transformed_points(ds) if points else ds.y

    def _fit_scope(self, model: nn.Module) -> ContextManager:
        if model is self.model:
            # The full model may train the body (fused optimizers and BatchNorm kernels do not
            # move the version counters the digest memo watches): hash it afresh next time.
            self._digest.invalidate()
            return contextlib.nullcontext()
        return head_threads(self.device)

    def predict_with_targs(self, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not self._precompute:
            return super().predict_with_targs(is_test)
        split = 'test' if is_test else 'val'
        self._eval_dl(is_test)  # a clear error when there is no test set
        ds = getattr(self.data, _SPLITS[split][0])
        dl = ArrayLoader(self.activations(split), self._targets(ds), self.data.bs)
        with head_threads(self.device):
            head: nn.Module = self.model.head  # type: ignore[assignment]  # a child: typed Tensor | Module
            return predict_dl(head, dl, activation=self.activation, device=self.device,
                              precision=self.precision)

    def freeze_to(self, n: int) -> None:
        super().freeze_to(n)
        if self._precompute and any(self.trainable_groups()[:-1]):
            self._precompute = False
            warnings.warn('precompute turned off: the body now trains, so its cached activations '
                          'no longer apply', stacklevel=user_stacklevel())

    def set_data(self, data: Any) -> None:
        """Swap in new data (e.g. a larger size), keep the weights, refreeze, drop the cache
        (precompute stays as it was; the next fit computes the new data's activations).

            learn.set_data(get_data(299, bs)); learn.fit(1e-2, 3, cycle_len=1)
        """
        super().set_data(data)
        self._acts.clear()

    def __repr__(self) -> str:
        return (f'{super().__repr__()}\n  arch {self.arch_name}, precompute '
                f'{"on" if self._precompute else "off"}')
