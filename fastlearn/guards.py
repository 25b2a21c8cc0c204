"""What protects a fit: the divergence guard every fit runs with, the keeper of the best model
across the phases of a recipe, and the check that BatchNorm gets batches it can train on.

    learn.fit(1e6, 3)            # the guard stops it at the first NaN loss and puts the weights back
    best = KeepBest()
    learn.fit(1e-2, 1, callbacks=[best.phase('head')]); ...; best.restore(learn)
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any

from torch import nn

from .core import user_stacklevel
from .sgdr import Callback

__all__ = ['DivergenceGuard', 'TrainingDiverged', 'KeepBest', 'check_batch_norm_batches', 'BATCH_NORMS']

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class TrainingDiverged(UserWarning):
    """The divergence guard stopped a fit and restored the weights from before it went wrong."""


def _snapshot(model: nn.Module, layer_opt: Any) -> tuple[dict, dict | None]:
    opt = copy.deepcopy(layer_opt.state_dict()) if layer_opt is not None else None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, opt


class DivergenceGuard(Callback):
    """On in every `fit` (`fit(..., guard=False)` turns it off). A batch loss that is NaN/inf, or a
    smoothed loss above `factor` times the larger of the loss the fit started from and `floor`,
    stops the fit; the weights and the optimizer state go back to the start of the epoch in
    which it happened (the last state that was validated), and a `TrainingDiverged` warning says
    what happened and what to do. `tripped` holds the reason, None while the fit is healthy.

    `floor` keeps a well-trained model (a start loss near 0) from tripping on an ordinary loss:
    the learner passes the loss of a uniform guess for classification (ln c; ln 2 per tag), so
    with 2 classes only a smoothed loss above 6.9 counts as an explosion.
    A copy of the weights is taken at each epoch start: a few milliseconds for a 5M-parameter model.
    """

    def __init__(self, factor: float = 10.0, floor: float = 0.0) -> None:
        if not factor > 1:
            raise ValueError(f'factor must be > 1, got {factor!r}')
        self.factor, self.floor = factor, float(floor)
        self.tripped: str | None = None
        self._saved: tuple[dict, dict | None] | None = None
        self._start_loss = math.nan

    def on_train_begin(self, state: Any) -> None:
        self.tripped, self._start_loss, self._first = None, math.nan, state.iteration

    def on_epoch_begin(self, state: Any) -> None:
        self._saved = _snapshot(state.model, state.layer_opt)

    def on_batch_end(self, state: Any, loss: float) -> None:
        k = state.iteration - self._first
        if k == 0:
            self._start_loss = loss  # the loss the fit started from
        lr = state.layer_opt.lrs[-1]
        if not math.isfinite(loss):
            self._trip(state, f'the loss became {loss} at epoch {state.epoch}, batch {k} (lr {lr:.3g})')
        elif k > 0 and math.isfinite(self._start_loss):
            ref = max(self._start_loss, self.floor)
            if ref > 0 and state.smooth_loss > self.factor * ref:
                self._trip(state, f'the loss rose to {state.smooth_loss:.4g}, over {self.factor:g}x '
                                  f'{ref:.4g} (the larger of its starting loss and a uniform '
                                  f'guess\'s), at epoch {state.epoch}, batch {k} '
                                  f'(lr {lr:.3g})')

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        if metrics and not math.isfinite(metrics[0]) and self.tripped is None:
            self._trip(state, f'the validation loss became {metrics[0]} after epoch {state.epoch}')

    def _trip(self, state: Any, reason: str) -> None:
        self.tripped, state.stop = reason, True
        assert self._saved is not None  # on_epoch_begin took the snapshot
        weights, opt = self._saved
        state.model.load_state_dict(weights)
        if opt is not None:
            state.layer_opt.load_state_dict(opt)
        warnings.warn(f'training diverged: {reason}. The fit stopped and the weights are back as they '
                      f'were at the start of epoch {state.epoch}. Train at a lower learning rate '
                      '(learn.lr_find(); learn.sched.plot() shows where the loss still falls).',
                      TrainingDiverged, stacklevel=user_stacklevel())

    def __repr__(self) -> str:
        return f'DivergenceGuard(factor={self.factor:g}, floor={self.floor:.3g})'


class KeepBest:
    """The best validated model over several fits (the phases of a recipe), kept in memory.

        best = KeepBest()
        learn.fit(1e-2, 1, callbacks=[best.phase('head, precomputed')])
        ...
        best.restore(learn)     # back to the best epoch if a later one was worse
        best.where              # ('head, precomputed', 0): the phase and epoch it came from

    The score is the first metric (accuracy; higher is better) or, with no metric, the validation
    loss (lower is better); a tie on the metric goes to the lower loss. It snapshots the learner's
    whole model, also when a fit trains only the head on cached activations.
    """

    def __init__(self) -> None:
        self.best: tuple[float, float] | None = None
        self.where: tuple[str, int] | None = None
        self.metrics: list[float] | None = None
        self._weights: dict | None = None
        self.improved_last = False

    def phase(self, name: str) -> Callback:
        """The callback for one fit, whose epochs are reported as `(name, epoch)`."""
        keeper = self

        class _Phase(Callback):
            def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
                keeper._consider(state.learn, name, state.epoch, metrics)
        return _Phase()

    def _consider(self, learn: Any, name: str, epoch: int, metrics: list[float]) -> None:
        if not metrics:
            return
        loss = float(metrics[0])
        key = (-loss if len(metrics) == 1 else float(metrics[1]), -loss)
        self.improved_last = all(math.isfinite(k) for k in key) and (self.best is None or key > self.best)
        if self.improved_last:
            self.best, self.where, self.metrics = key, (name, epoch), [float(m) for m in metrics]
            self._weights = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}

    def restore(self, learn: Any) -> bool:
        """Load the best model into `learn` unless the last epoch seen was the best; True if it
        loaded."""
        if self._weights is None or self.improved_last:
            return False
        learn.model.load_state_dict(self._weights)
        return True

    def __repr__(self) -> str:
        return 'KeepBest(empty)' if self.where is None else f'KeepBest({self.where}, {self.metrics})'


def check_batch_norm_batches(learn: Any) -> None:
    """BatchNorm cannot train on a batch of one image (torch: "Expected more than 1 value per
    channel"); loaders drop or merge a last batch of one, so only a one-image training set or
    bs=1 gets here. Say so before training starts, and offer `bn_freeze(True)` only where it
    would help: it fixes the body's statistics, never the new head's."""
    ds, bs = getattr(learn.data, 'trn_ds', None), getattr(learn.data, 'bs', None)
    if ds is None or bs is None or (len(ds) != 1 and bs != 1):
        return
    last = len(learn.layer_groups) - 1
    training = [i for i, (g, t) in enumerate(zip(learn.layer_groups, learn.trainable_groups()))
                if t and (i == last or not learn._bn_freeze)
                for m in g.modules() if isinstance(m, BATCH_NORMS)]
    if not training:
        return
    cause = (f'the training set has 1 image ({getattr(ds, "fnames", ["?"])[0]})'
             if len(ds) == 1 else 'bs=1 gives batches of one image')
    fix = ('' if last in training else
           ', or call learn.bn_freeze(True) to train with the body\'s BatchNorm statistics fixed')
    raise ValueError(f'{cause}, and the BatchNorm layers being trained need at least 2 images '
                     'per batch to compute their statistics; add training images (2 or more) '
                     f'and use bs of 2 or more{fix}')
