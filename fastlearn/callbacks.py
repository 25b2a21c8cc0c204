"""Callbacks that fastai 2, Keras and Lightning users reach for, on fastlearn's protocol
(`sgdr.Callback`: hooks get the loop's `FitState`; stopping is `state.stop = True`).

    learn.fit(1e-2, 10, callbacks=[EarlyStopping(patience=2), CSVLogger('/tmp/fl/history.csv')])

Each epoch's values arrive as `[val_loss, *metrics]`; they are named from the learner's metrics
(`accuracy`, ...) when the count matches, else `metric_1`, `metric_2`, ...
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from .core import atomic_write
from .model import metric_name
from .sgdr import Callback

__all__ = ['EarlyStopping', 'CSVLogger', 'TensorBoardCallback', 'epoch_names']


def epoch_names(state: Any, n: int) -> list[str]:
    """Names for an epoch's `n` values `[val_loss, *metrics]`."""
    metrics = list(getattr(getattr(state, 'learn', None), 'metrics', None) or [])
    if len(metrics) == n - 1:
        return ['val_loss', *[metric_name(m) for m in metrics]]
    return ['val_loss', *[f'metric_{i}' for i in range(1, n)]]


class EarlyStopping(Callback):
    """Stop training once `monitor` has not improved by more than `min_delta` for `patience`
    epochs in a row (Keras' and Lightning's `EarlyStopping`, fastai 2's `EarlyStoppingCallback`).

        learn.fit(1e-2, 20, callbacks=[EarlyStopping('accuracy', patience=3)])

    `monitor` is 'val_loss' or a metric's name; `mode='auto'` minimises names with 'loss' or
    'error' in them and maximises the rest. The epoch that stops is `stopped_epoch` (0-based).
    """

    def __init__(self, monitor: str = 'val_loss', *, patience: int = 1, min_delta: float = 0.0,
                 mode: str = 'auto') -> None:
        if mode not in ('auto', 'min', 'max'):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f'patience must be a positive integer (epochs), got {patience!r}')
        if not min_delta >= 0:
            raise ValueError(f'min_delta must be >= 0, got {min_delta!r}')
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        if mode == 'auto':
            mode = 'min' if ('loss' in monitor or 'error' in monitor) else 'max'
        self.mode = mode
        self.best: float | None = None
        self.wait, self.stopped_epoch = 0, None

    def on_train_begin(self, state: Any) -> None:
        self.best, self.wait, self.stopped_epoch = None, 0, None

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        if not len(metrics):
            return  # no validation set: nothing to watch
        names = epoch_names(state, len(metrics))
        if self.monitor not in names:
            raise ValueError(f'EarlyStopping monitors {self.monitor!r}, but the epoch gives '
                             f'{names}; pass one of those')
        value = float(metrics[names.index(self.monitor)])
        sign = 1.0 if self.mode == 'max' else -1.0
        if math.isfinite(value) and (self.best is None or sign * (value - self.best) > self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stop, self.stopped_epoch = True, state.epoch


class CSVLogger(Callback):
    """One row per epoch, `epoch,trn_loss,val_loss,<metrics>`, in a CSV file (Keras'
    `CSVLogger`, fastai 2's `CSVLogger`). The file is rewritten whole, atomically, after each
    epoch, so it is always complete; `append=True` keeps the rows of earlier fits.

        learn.fit(1e-2, 3, callbacks=[CSVLogger('/tmp/fl/history.csv')])
    """
    main_only = True  # several processes train: rank 0 writes the file

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        self.path, self.append = Path(path), append
        self.header: list[str] | None = None
        self.rows: list[list[str]] = []

    def on_train_begin(self, state: Any) -> None:
        self.header, self.rows = None, []
        if self.append and self.path.is_file():
            lines = self.path.read_text().splitlines()
            if lines:
                self.header = lines[0].split(',')
                self.rows = [ln.split(',') for ln in lines[1:]]

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        header = ['epoch', 'trn_loss', *epoch_names(state, len(metrics))]
        if self.header is not None and self.header != header:
            raise ValueError(f'{self.path} has the columns {self.header}, this fit gives {header}; '
                             'log to another file or pass append=False')
        self.header = header
        self.rows.append([str(state.epoch), repr(float(state.smooth_loss)),
                          *[repr(float(m)) for m in metrics]])
        with atomic_write(self.path, 'w') as f:
            f.write('\n'.join(','.join(r) for r in [self.header, *self.rows]) + '\n')


class TensorBoardCallback(Callback):
    """Write the smoothed training loss and every group's learning rate per batch, and the
    epoch's values, for TensorBoard (fastai 2's `TensorBoardCallback`, Lightning's default
    logger). Needs the `tensorboard` package (`pip install tensorboard`).

        learn.fit(1e-2, 3, callbacks=[TensorBoardCallback('/tmp/fl/runs/head')])
        # then: tensorboard --logdir /tmp/fl/runs
    """
    main_only = True  # several processes train: rank 0 writes the logs

    def __init__(self, log_dir: str | os.PathLike) -> None:
        if importlib.util.find_spec('tensorboard') is None:
            raise ImportError('TensorBoardCallback needs the tensorboard package, which is not '
                              'installed: pip install tensorboard')
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self.step = 0

    def _writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.log_dir))

    def on_train_begin(self, state: Any) -> None:
        if self.writer is None:
            self.writer = self._writer()

    def on_batch_end(self, state: Any, loss: float) -> None:
        self.writer.add_scalar('train/smooth_loss', float(state.smooth_loss), self.step)
        for i, lr in enumerate(state.layer_opt.lrs):
            self.writer.add_scalar(f'lr/group_{i}', float(lr), self.step)
        self.step += 1  # counts on across fits, so one run's curves continue

    def on_epoch_end(self, state: Any, metrics: list[float]) -> None:
        for name, value in zip(epoch_names(state, len(metrics)), metrics):
            self.writer.add_scalar(f'valid/{name}', float(value), self.step)
        self.writer.flush()

    def on_train_end(self, state: Any) -> None:
        if self.writer is not None:
            self.writer.flush()
