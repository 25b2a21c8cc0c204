"""`Learner`: a model cut into layer groups, plus fit, lr_find, freeze/unfreeze, save/load,
predict and TTA — the whole API in the class body."""
from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core import atomic_write, default_device, listify, to_np
from .images import open_image
from .layer_optimizer import LayerOptimizer, lr_range, sgd_momentum
from .metrics import accuracy, accuracy_thresh
from .model import fit as fit_loop
from .model import epochs_for, predict_dl, to_device
from .sgdr import CosAnneal, CycleSaver, LR_Finder, Recorder, SaveBestModel

__all__ = ['Learner']

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def l1_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 loss with targets shaped like the outputs: `(N,)` targets against `(N, 1)` outputs
    would otherwise broadcast to `(N, N)` and train on every pair."""
    return F.l1_loss(out, y.view_as(out) if y.numel() == out.numel() else y)


def _task_defaults(data: Any) -> tuple[Callable, Callable, list[Callable]]:
    """Loss, output activation and metrics that follow the data: the model emits logits."""
    if getattr(data, 'is_reg', False):
        return l1_loss, (lambda out: out), []
    if getattr(data, 'is_multi', False):
        return F.binary_cross_entropy_with_logits, torch.sigmoid, [accuracy_thresh(0.5)]
    return F.cross_entropy, (lambda out: F.log_softmax(out, dim=-1)), [accuracy]


def _task(data: Any) -> tuple[int, str]:
    """Outputs and kind of task: what a model built for `data` predicts."""
    kind = ('regression' if getattr(data, 'is_reg', False) else
            'multi-label' if getattr(data, 'is_multi', False) else 'single-label')
    return int(data.c), kind


def _resolve(base: Path, name: str | os.PathLike) -> Path:
    # As in the course, an absolute name escapes a read-only dataset folder.
    return Path(name) if Path(name).is_absolute() else Path(base) / name


class Learner:
    """A model, its data and its layer groups (earliest → head), ready to train.

        learn = ConvLearner.pretrained(resnet34, data)
        learn.fit(1e-2, 3, cycle_len=1)
        learn.unfreeze()
        learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1, cycle_mult=2)
    """

    def __init__(self, data: Any, model: nn.Module, layer_groups: Sequence[nn.Module], *,
                 opt_fn: Callable | None = None, crit: Callable | None = None,
                 metrics: Sequence[Callable] | None = None, tmp_name: str = 'tmp',
                 models_name: str = 'models', clip: float | None = None,
                 device: torch.device | str | None = None, channels_last: bool | None = None,
                 quiet: bool = False) -> None:
        self.data, self.layer_groups = data, list(layer_groups)
        self.device = torch.device(device) if device else default_device()
        # channels-last runs convolutions 1.3-1.7x faster on CPUs and tensor cores alike.
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = has_conv if channels_last is None else channels_last
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        loss, self.activation, default_metrics = _task_defaults(data)
        self.crit = crit or loss
        self.metrics = list(default_metrics if metrics is None else metrics)
        self.opt_fn = opt_fn or sgd_momentum
        self.tmp_path = _resolve(data.path, tmp_name)
        self.models_path = _resolve(data.path, models_name)
        self.clip, self.quiet = clip, quiet
        self.layer_opt: LayerOptimizer | None = None
        self.sched: Recorder | None = None
        self._bn_freeze = False

    # --- layer groups ------------------------------------------------------------------------
    def get_layer_groups(self) -> list[nn.Module]:
        """The layer groups, earliest first, head last (one learning rate each)."""
        return self.layer_groups

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups `[:n]` and train groups `[n:]` (`freeze_to(-1)`: only the head)."""
        if not -len(self.layer_groups) <= n <= len(self.layer_groups):
            raise ValueError(f'freeze_to({n}): the model has {len(self.layer_groups)} layer groups; '
                             f'pass 0..{len(self.layer_groups)} (or -1 to train only the head)')
        n = n % len(self.layer_groups) if n < 0 else n
        for i, g in enumerate(self.layer_groups):
            for p in g.parameters():
                p.requires_grad_(i >= n)

    def freeze(self) -> None:
        """Train only the last layer group (the head)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    def bn_freeze(self, b: bool) -> None:
        """Keep every BatchNorm layer in eval mode, trainable groups included (`bn_freeze(True)`)."""
        self._bn_freeze = b

    def trainable_groups(self) -> list[bool]:
        """Per layer group: does any of its parameters train?"""
        return [any(p.requires_grad for p in g.parameters()) for g in self.layer_groups]

    def _train_mode(self, model: nn.Module) -> None:
        """Train mode, except frozen groups stay in eval: their BatchNorm statistics and dropout
        must not move, which is also what makes a precomputed head equal the frozen model."""
        model.train()
        for g, trainable in zip(self.layer_groups, self.trainable_groups()):
            if not trainable:
                g.eval()
        if self._bn_freeze:
            for m in model.modules():
                if isinstance(m, _BN):
                    m.eval()

    # --- training ----------------------------------------------------------------------------
    def _training_setup(self) -> tuple[nn.Module, Any, Any]:
        """The module to run and its train/valid loaders (the precompute learner overrides this)."""
        return self.model, self.data.trn_dl, self.data.val_dl

    def _fit_scope(self, model: nn.Module) -> ContextManager:
        """What training `model` needs around it (the precompute learner's head runs on one
        CPU thread)."""
        return contextlib.nullcontext()

    def _get_layer_opt(self, lrs: Any, wds: Any) -> LayerOptimizer:
        n = len(self.layer_groups)
        lrs = lr_range(lrs, n)
        wds = listify(0.0 if wds is None else wds, n, 'wds', f"np.array([{', '.join(['1e-4'] * n)}])")
        if self.layer_opt is None:
            self.layer_opt = LayerOptimizer(self.opt_fn, self.layer_groups, lrs, wds)
        else:
            self.layer_opt.set_lrs(lrs)
            self.layer_opt.set_wds(wds)
        return self.layer_opt

    def fit(self, lrs: Any, n_cycle: int, wds: Any = None, *, cycle_len: float | None = None,
            cycle_mult: float = 1, cycle_save_name: str | None = None,
            best_save_name: str | None = None, metrics: Sequence[Callable] | None = None,
            callbacks: Sequence[Any] | None = None, warm_up: bool = False,
            quiet: bool | None = None) -> list[float]:
        """Train for `n_cycle` epochs at constant rates, or with `cycle_len`, `n_cycle` SGDR
        cycles of `cycle_len * cycle_mult**i` epochs (`fit(1e-2, 3, cycle_len=1, cycle_mult=2)`
        is 1 + 2 + 4 = 7 epochs). `lrs` and `wds` are a scalar, one value per layer group
        (earliest → head) or a `slice`. Returns the last `[val_loss, *metrics]`.
        """
        if not isinstance(n_cycle, (int, np.integer)) or n_cycle < 1:
            raise ValueError(f'n_cycle must be a positive integer, got {n_cycle!r}; e.g. fit(1e-2, 3)')
        self._check_trainable()
        layer_opt = self._get_layer_opt(lrs, wds)
        n_epochs = epochs_for(n_cycle, cycle_len, cycle_mult)
        recorder = Recorder()
        cbs: list[Any] = [recorder]
        if cycle_len:
            cbs.append(CosAnneal(cycle_len, cycle_mult, warm_up=warm_up))
            if cycle_save_name:
                cbs.append(CycleSaver(cycle_save_name, cycle_len, cycle_mult))
        elif cycle_save_name:
            raise ValueError('cycle_save_name needs cycle_len: e.g. fit(1e-2, 3, cycle_len=1, '
                             f"cycle_save_name={cycle_save_name!r})")
        if best_save_name:
            cbs.append(SaveBestModel(best_save_name))
        cbs += list(callbacks or [])
        self.sched = recorder
        return self._run(layer_opt, n_epochs, cbs, metrics=metrics, quiet=quiet)

    def _check_trainable(self) -> None:
        if not any(self.trainable_groups()):
            raise ValueError(f'every one of the {len(self.layer_groups)} layer groups is frozen, so '
                             'there is nothing to train; call learn.freeze() to train the head or '
                             'learn.unfreeze() to train them all')

    def _run(self, layer_opt: LayerOptimizer, n_epochs: int, callbacks: list[Any], *,
             metrics: Sequence[Callable] | None = None, quiet: bool | None = None,
             validate: bool = True, setup: tuple[nn.Module, Any, Any] | None = None,
             desc: str = 'epoch') -> list[float]:
        model, trn_dl, val_dl = setup or self._training_setup()
        with self._fit_scope(model):
            return fit_loop(model, trn_dl, val_dl if validate else None, layer_opt, self.crit,
                            n_epochs, metrics=self.metrics if metrics is None else metrics,
                            callbacks=callbacks, activation=self.activation,
                            train_mode=lambda: self._train_mode(model), learn=self,
                            device=self.device, channels_last=self.channels_last, clip=self.clip,
                            quiet=self.quiet if quiet is None else quiet,
                            progress=model is self.model, desc=desc)

    def lr_find(self, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None, linear: bool = False,
                num_it: int | None = None) -> Recorder:
        """Raise the rate exponentially from `start_lr` to `end_lr` over one epoch (or `num_it`
        batches), stopping when the loss explodes; then put the weights, the optimizer state
        and its rates back as they were.

            learn.lr_find(); learn.sched.plot()

        With differential rates (`start_lr=np.array([1e-7, 1e-6, 1e-5])`) the last group sweeps
        to `end_lr` and the others keep their ratio to it.
        """
        self._check_trainable()
        finder = LR_Finder(start_lr=float(lr_range(start_lr, len(self.layer_groups))[-1]),
                           end_lr=end_lr, n_iter=num_it, linear=linear)
        setup = self._training_setup()
        model, n_batches = setup[0], len(setup[1])
        model_state = copy.deepcopy(model.state_dict())
        opt_state = copy.deepcopy(self.layer_opt.state_dict()) if self.layer_opt else None
        recorder = Recorder()
        try:
            layer_opt = self._get_layer_opt(start_lr, wds)
            self._run(layer_opt, math.ceil((num_it or n_batches) / n_batches), [recorder, finder],
                      validate=False, setup=setup, desc='lr_find')
        finally:
            model.load_state_dict(model_state)
            if opt_state is None:  # the next fit starts from a fresh optimizer, as it would have
                self.layer_opt = None
            else:
                self.layer_opt.load_state_dict(opt_state)
        self.sched = recorder
        return recorder

    # --- saving ------------------------------------------------------------------------------
    def _model_file(self, name: str) -> Path:
        return self.models_path / f'{name}.pth'

    def save(self, name: str) -> Path:
        """Write the weights to `models/<name>.pth`, atomically: an interrupted save leaves the
        previous file loadable."""
        path = self._model_file(name)
        try:
            with atomic_write(path) as f:
                torch.save(self.model.state_dict(), f)
        except OSError as e:
            raise OSError(f'cannot save {name!r} to {path}: {e.strerror or e}. If {self.models_path} '
                          "is read-only, pass models_name='/a/writable/folder' when creating the "
                          'learner.') from e
        return path

    def load(self, name: str) -> None:
        """Load weights saved by `save(name)` (tensors only: nothing is unpickled)."""
        path = self._model_file(name)
        if not path.exists():
            saved = sorted(p.stem for p in self.models_path.glob('*.pth')) if self.models_path.is_dir() else []
            raise FileNotFoundError(f'no saved model {name!r} at {path}; saved models here: '
                                    f'{saved or "none"}')
        state = torch.load(path, map_location=self.device, weights_only=True)
        if isinstance(state, dict) and 'format' in state and 'state_dict' in state:
            raise ValueError(f'{path} is a file from learn.export(); open it with '
                             f'load_learner({str(path)!r})')
        self.model.load_state_dict(state)

    def set_data(self, data: Any) -> None:
        """Swap in new data (progressive resizing), keep the weights, and refreeze.

            learn.set_data(get_data(299, bs)); learn.fit(1e-2, 3, cycle_len=1)
        """
        if _task(data) != _task(self.data):
            (n_old, old), (n_new, new) = _task(self.data), _task(data)
            raise ValueError(f'set_data needs data for the same outputs: the model predicts '
                             f'{n_old} ({old}), the new data has {n_new} ({new}); build a new '
                             'learner for it')
        self.data = data
        self.freeze()

    # --- predicting --------------------------------------------------------------------------
    def predict_dl(self, dl: Any, *, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and targets for any loader, through the full model (with `desc`, under
        a progress bar of that name unless the learner is quiet)."""
        return predict_dl(self.model, dl, activation=self.activation, device=self.device,
                          channels_last=self.channels_last, desc=None if self.quiet else desc)

    def predict_with_targs(self, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`(log_preds, targets)` for the validation (or test) set, in loader order."""
        return self.predict_dl(self._eval_dl(is_test))

    def predict(self, is_test: Any = False) -> Any:
        """Log-probabilities (probabilities for multi-label) for the validation or test set:

            log_preds = learn.predict()              # (N, C), the validation set
            log_preds = learn.predict(is_test=True)  # the test set

        Given an image instead (a file name, a Path or a PIL image), one prediction, as fastai 2
        users know it: `(class, index, probabilities)`, e.g. `('cats', 0, array([0.98, 0.02]))`;
        for multi-label `(classes over 0.5, their indices, probabilities)`.
        """
        if isinstance(is_test, (bool, np.bool_, int)):
            return self.predict_with_targs(bool(is_test))[0]
        return self._predict_image(is_test)

    def _predict_image(self, image: Any) -> tuple[Any, Any, np.ndarray]:
        if not isinstance(image, (str, os.PathLike)) and not hasattr(image, 'convert'):
            raise TypeError(f'predict takes is_test=True/False, or an image (a file name, a Path '
                            f'or a PIL image); got {type(image).__name__}')
        if getattr(self.data, 'is_reg', False):
            raise ValueError('predict(image) names a class and this is a regression model; use '
                             'learn.predict_array(val_tfms(open_image(f))[0][None]) for its output')
        tfms = self.data.val_dl.dataset.transform
        im = (image if hasattr(image, 'convert') else
              open_image(image, getattr(tfms, 'draft_size', None))).convert('RGB')
        x = tfms(im)[0] if tfms is not None else torch.from_numpy(np.array(im)).permute(2, 0, 1)
        out = self.predict_array(x[None])[0]
        classes = list(self.data.classes)
        if getattr(self.data, 'is_multi', False):
            idx = np.flatnonzero(out > 0.5)
            return [classes[i] for i in idx], idx, out
        probs = np.exp(out)  # the activation gives log-probabilities
        i = int(probs.argmax())
        return classes[i], i, probs

    def predict_array(self, x: Any) -> np.ndarray:
        """Predictions for a batch already transformed, e.g. `val_tfms(open_image(f))[0][None]`."""
        x = torch.as_tensor(x, dtype=torch.float32)
        self.model.eval()
        with torch.inference_mode():
            out = self.model(to_device(x, self.device, self.channels_last))
        return to_np(self.activation(out))

    def _eval_dl(self, is_test: bool, augmented: bool = False) -> Any:
        dl = (self.data.test_aug_dl if augmented else self.data.test_dl) if is_test else \
             (self.data.aug_dl if augmented else self.data.val_dl)
        if dl is None:
            raise ValueError('there is no test set: pass test_name= when building the data, e.g. '
                             "ImageClassifierData.from_paths(PATH, tfms=tfms, test_name='test')")
        return dl

    def TTA(self, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Test-time augmentation: one plain pass plus `n_aug` passes with training transforms,
        stacked as `(n_aug + 1, N, C)`; average the probabilities as the course does:

            log_preds, y = learn.TTA()
            probs = np.mean(np.exp(log_preds), 0)
        """
        preds, y = self.predict_dl(self._eval_dl(is_test), desc=f'TTA 1/{n_aug + 1}')
        aug_dl = self._eval_dl(is_test, augmented=True)
        return np.stack([preds] + [self.predict_dl(aug_dl, desc=f'TTA {i + 2}/{n_aug + 1}')[0]
                                   for i in range(n_aug)]), y

    # --- what it is --------------------------------------------------------------------------
    def __repr__(self) -> str:
        lrs = ('[' + ', '.join(f'{lr:.3g}' for lr in self.layer_opt.lrs) + ']'
               if self.layer_opt else 'not set (no fit yet)')
        lines = [f'{type(self).__name__}: {len(self.layer_groups)} layer groups, lrs {lrs}']
        for i, (g, t) in enumerate(zip(self.layer_groups, self.trainable_groups())):
            n = sum(p.numel() for p in g.parameters())
            lines.append(f'  group {i}: {"trainable" if t else "frozen   "} {n:>11,} params')
        return '\n'.join(lines)
