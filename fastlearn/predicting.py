"""What a trained learner predicts: the validation or test set, any loader, one image or one
batch, with and without test-time augmentation; and a multi-label learner's thresholds.
`Learner` takes these methods from `Predicting`.

    log_preds = learn.predict()                    # (N, C) log-probabilities, the validation set
    log_preds, y = learn.TTA()                     # (n_aug + 1, N, C)
    learn.predict('cat.jpg')                       # ('cats', 0, array([0.98, 0.02]))
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import to_np
from .images import open_image
from .model import predict_dl, to_device
from .multilabel import as_thresholds, tags_above
from .precision import Precision
from .regression import PointPixels, points_tta
from .tasks import task_kind

__all__ = ['Predicting']


class Predicting:
    """The prediction half of `Learner`'s API; it reads the learner's model, data, device,
    precision and output activation."""
    model: nn.Module
    data: Any
    activation: Callable
    device: torch.device
    channels_last: bool
    precision: Precision
    quiet: bool
    _thresholds: np.ndarray | None

    def predict_dl(self, dl: Any, *, desc: str | None = None) -> np.ndarray:
        """`preds = learn.predict_dl(dl)`: predictions (log-probabilities for single-label) for
        any loader, through the full model, as in the course; `predict_dl_with_targs` gives the
        targets too. With `desc`, under a progress bar of that name unless the learner is quiet."""
        return self.predict_dl_with_targs(dl, desc=desc)[0]

    def predict_dl_with_targs(self, dl: Any, *, desc: str | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """`preds, y = learn.predict_dl_with_targs(dl)`: predictions and targets for any
        loader, through the full model, in loader order."""
        return predict_dl(self.model, dl, activation=self.activation, device=self.device,
                          channels_last=self.channels_last, desc=None if self.quiet else desc,
                          precision=self.precision)

    def predict_with_targs(self, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`(log_preds, targets)` for the validation (or test) set, in loader order."""
        return self.predict_dl_with_targs(self._eval_dl(is_test))

    def predict(self, is_test: Any = False) -> Any:
        """Log-probabilities (probabilities for multi-label) for the validation or test set:

            log_preds = learn.predict()              # (N, C), the validation set
            log_preds = learn.predict(is_test=True)  # the test set

        Given an image instead (a file name, a Path or a PIL image), one prediction, as fastai 2
        users know it: `(class, index, probabilities)`, e.g. `('cats', 0, array([0.98, 0.02]))`;
        for multi-label `(tags over their thresholds, their indices, probabilities)`, the
        thresholds `learn.thresholds` (0.5 while unset).
        """
        if isinstance(is_test, (bool, np.bool_, int)):
            return self.predict_with_targs(bool(is_test))[0]
        return self._predict_image(is_test)

    def _predict_image(self, image: Any) -> tuple[Any, ...]:
        if not isinstance(image, (str, os.PathLike)) and not hasattr(image, 'convert'):
            raise TypeError(f'predict takes is_test=True/False, or an image (a file name, a Path '
                            f'or a PIL image); got {type(image).__name__}')
        if getattr(self.data, 'is_reg', False):
            raise ValueError('predict(image) names a class and this is a regression model; use '
                             'learn.predict_array(val_tfms(open_image(f))[None]) for its output')
        tfms = self.data.val_dl.dataset.transform
        im = (image if hasattr(image, 'convert') else
              open_image(image, getattr(tfms, 'draft_size', None))).convert('RGB')
        x = tfms(im) if tfms is not None else torch.from_numpy(np.array(im)).permute(2, 0, 1)
        out = self.predict_array(x[None])[0]
        classes = list(self.data.classes)
        if getattr(self.data, 'is_multi', False):
            th = 0.5 if self._thresholds is None else self._thresholds
            tags, idx = tags_above(out, classes, th)
            return tags, idx, out
        probs = np.exp(out)  # the activation gives log-probabilities
        i = int(probs.argmax())
        return classes[i], i, probs

    @property
    def thresholds(self) -> np.ndarray | None:
        """Multi-label: the probability over which each tag is predicted, one per tag (None:
        0.5). `learn.thresholds = opt_thresholds(probs, y)`, or one number for every tag."""
        return self._thresholds

    @thresholds.setter
    def thresholds(self, th: Any) -> None:
        if th is not None and not getattr(self.data, 'is_multi', False):
            raise ValueError('thresholds apply to multi-label data (tags); this learner predicts '
                             f'{task_kind(self.data)[1]} targets')
        self._thresholds = None if th is None else as_thresholds(th, int(self.data.c))

    def predict_array(self, x: Any) -> np.ndarray:
        """Predictions for a batch already transformed, e.g. `val_tfms(open_image(f))[None]`."""
        x = torch.as_tensor(x, dtype=torch.float32)
        self.model.eval()
        with torch.inference_mode(), self.precision.autocast(self.device):
            out = self.model(to_device(x, self.device, self.channels_last))
        return to_np(self.activation(out.float()))

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

        For points, each augmented pass comes back in the plain image's pixels (the
        augmentation's move undone: `regression.points_tta`), so `np.mean(preds, 0)` averages
        like with like.
        """
        if isinstance(self.activation, PointPixels):
            return points_tta(self, n_aug, is_test)
        preds, y = self.predict_dl_with_targs(self._eval_dl(is_test), desc=f'TTA 1/{n_aug + 1}')
        aug_dl = self._eval_dl(is_test, augmented=True)
        return np.stack([preds] + [self.predict_dl(aug_dl, desc=f'TTA {i + 2}/{n_aug + 1}')
                                   for i in range(n_aug)]), y
