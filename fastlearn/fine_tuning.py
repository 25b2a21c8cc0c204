"""fastai 2's schedules on a `Learner`: `fit_one_cycle` and `fine_tune` (the `FineTuning` part of
`Learner`, beside `Predicting` and `Saving`), and the unfrozen rate rule `fine_tune` shares with
`fastlearn train` while the body's BatchNorm statistics train.

    learn.fit_one_cycle(3, 1e-2)
    learn.fine_tune(3)            # 1 head epoch, then 3 on every layer group; the best kept
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .guards import KeepBest
from .model import metric_name
from .one_cycle import OneCycle
from .sgdr import Recorder

__all__ = ['FineTuning', 'BN_TRAINS_LR_MULT']

# Once the body's BatchNorm statistics train (carried to the data's at unfreeze, batch_norm.py),
# the body has far to move on data unlike ImageNet, and a rate above the head's gets there
# sooner. On the digits, the demo's 7 unfrozen epochs, seeds 42 / 0 / 1 (head 91.4-91.6 %): top
# rate at the head's lr ends 98.3 / 99.2 / 99.2 %, 2x 99.7 / 98.9 / 99.4 %, 3x 99.7 / 99.2 / 98.9 %
# but dips to 91.1 % at a restart, 5x to 88.3 %; `fine_tune(3, 1e-2)` with TTA at base_lr/2 93.9 /
# 95.3 / 95.3 %, at 2x 96.7 / 96.7 / 97.5 % (seeds 0-2). bench/README.md has the tables. `fastlearn
# train`/`demo` (demo.choose_unfrozen_lrs) and `fine_tune` use it.
BN_TRAINS_LR_MULT = 2.0


def _metrics_text(values: Sequence[float], metrics: Sequence[Callable]) -> str:
    names = ['val_loss'] + [metric_name(f) for f in metrics]
    return ', '.join(f'{n} {v:.4f}' for n, v in zip(names, values))


class FineTuning:
    """`fit_one_cycle` and `fine_tune` for `Learner`: they drive the learner's own loop (`_run`),
    optimizer, divergence guard and freezing, declared here as `Predicting` declares what it reads."""
    quiet: bool
    metrics: list[Callable]
    sched: Recorder | None
    freeze: Callable[[], None]
    unfreeze: Callable[[], None]
    body_bn_trains: Callable[[], bool]
    _check_trainable: Callable[[], None]
    _get_layer_opt: Callable[[Any, Any], Any]
    _guard: Callable[[], Any]
    _run: Callable[..., list[float]]

    def fit_one_cycle(self, n_epochs: int, max_lr: Any = 1e-2, wds: Any = None, *,
                      pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e4,
                      moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95),
                      metrics: Sequence[Callable] | None = None,
                      callbacks: Sequence[Any] | None = None, guard: bool = True,
                      quiet: bool | None = None) -> list[float]:
        """fastai 2's one cycle: `n_epochs` epochs whose rate warms up from `max_lr/div` to
        `max_lr` over the first `pct_start` of the run, then anneals to nearly 0, while the
        momentum dips from 0.95 to 0.85 and back (`one_cycle.one_cycle`).

            learn.fit_one_cycle(3, 1e-2)
            learn.fit_one_cycle(5, slice(1e-4, 1e-2)); learn.sched.plot_lr()
        """
        if not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1:
            raise ValueError(f'n_epochs must be a positive integer, got {n_epochs!r}; '
                             'e.g. fit_one_cycle(3, 1e-2)')
        self._check_trainable()
        layer_opt = self._get_layer_opt(max_lr, wds)
        recorder = Recorder()
        cbs = [recorder, *([self._guard()] if guard else []),
               OneCycle(pct_start=pct_start, div=div, final_div=final_div, moms=moms),
               *(callbacks or [])]
        self.sched = recorder
        return self._run(layer_opt, int(n_epochs), cbs, metrics=metrics, quiet=quiet)

    def fine_tune(self, epochs: int, base_lr: float = 1e-2, freeze_epochs: int = 1, *,
                  lr_mult: float = 100, pct_start: float = 0.3, div: float = 5.0,
                  keep_best: bool = True, **kwargs: Any) -> list[float]:
        """fastai 2's `fine_tune`: one cycle of `freeze_epochs` on the head at `base_lr`, then
        `unfreeze()` and one cycle of `epochs` at `slice(top/lr_mult, top)`, `top = base_lr/2`.
        While the body's BatchNorm statistics train (`bn_freeze(False)`, the default outside the
        architecture table's frozen ones), `top` is `BN_TRAINS_LR_MULT * base_lr`, and the fit says
        so: the body has further to go than fastai 2's rate takes it in a few epochs
        (bench/README.md has the figures, docs/sgdr.md the reason).

            learn.fine_tune(3)            # 1 head epoch, then 3 on every layer group

        With `keep_best` (the default; fastai 2 keeps the last epoch) the model ends at the best
        validation epoch of both cycles, as `fastlearn train` does, and the fit says when that was
        not the last; the metrics returned are that epoch's.
        """
        best = KeepBest() if keep_best else None
        given = list(kwargs.pop('callbacks', None) or [])
        say = not (kwargs.get('quiet') or self.quiet)
        self.freeze()
        self.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99,
                           callbacks=given + ([best.phase('head')] if best else []), **kwargs)
        self.unfreeze()
        top = base_lr / 2
        if self.body_bn_trains():
            top = BN_TRAINS_LR_MULT * base_lr
            if say:
                print(f"fine_tune: the body's BatchNorm statistics train, so the unfrozen cycle "
                      f'peaks at {BN_TRAINS_LR_MULT:g}x base_lr, {top:.3g} (not base_lr/2)')
        last = self.fit_one_cycle(epochs, slice(top / lr_mult, top), pct_start=pct_start, div=div,
                                  callbacks=given + ([best.phase('all layers')] if best else []),
                                  **kwargs)
        if best is None or best.where is None or best.metrics is None or not best.restore(self):
            return last
        if say:
            metrics = kwargs.get('metrics') or self.metrics
            print(f'fine_tune: kept the best epoch ({best.where[0]} cycle, epoch {best.where[1]}: '
                  f'{_metrics_text(best.metrics, metrics)}); the last was worse '
                  f'({_metrics_text(last, metrics)})')
        return list(best.metrics)
