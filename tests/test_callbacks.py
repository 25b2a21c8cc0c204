"""callbacks.py: early stopping, the CSV log and TensorBoard on the loop's callback protocol,
with a linear model on a small separable problem (no learner needed)."""
from __future__ import annotations

import csv
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastlearn.callbacks as callbacks_mod
from fastlearn.callbacks import CSVLogger, EarlyStopping, TensorBoardCallback, epoch_names
from fastlearn.layer_optimizer import LayerOptimizer
from fastlearn.metrics import accuracy
from fastlearn.model import fit
from fastlearn.precompute import ArrayLoader


def _problem(n=24):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return ArrayLoader(x.numpy(), y.numpy(), 8, shuffle=True, seed=0), ArrayLoader(x.numpy(), y.numpy(), 8)


def _fit(n_epochs, callbacks, lr=0.1):
    torch.manual_seed(0)
    trn, val = _problem()
    net = nn.Linear(4, 2)
    learn = SimpleNamespace(metrics=[accuracy])
    return fit(net, trn, val, LayerOptimizer(None, [net], lr), F.cross_entropy, n_epochs,
               metrics=[accuracy], callbacks=callbacks, learn=learn, quiet=True)


class Scripted:
    """Feeds EarlyStopping a fixed sequence of epoch values."""

    def __init__(self, values):
        self.values, self.state = values, SimpleNamespace(stop=False, epoch=0, learn=None)

    def run(self, cb):
        cb.on_train_begin(self.state)
        for epoch, v in enumerate(self.values):
            self.state.epoch = epoch
            cb.on_epoch_end(self.state, [v])
            if self.state.stop:
                return epoch
        return None


@pytest.mark.parametrize('values, patience, min_delta, stops_at', [
    ([1.0, 0.9, 0.95, 0.96, 0.5], 2, 0.0, 3),   # two epochs without a new best
    ([1.0, 0.9, 0.95, 0.8, 0.85], 2, 0.0, None),  # the best moved on epoch 3
    ([1.0, 0.99, 0.98, 0.97], 2, 0.05, 2),      # improvements under min_delta do not count
    ([1.0, float('nan'), 0.9], 1, 0.0, 1),      # nan is no improvement
])
def test_early_stopping_counts_epochs_without_improvement(values, patience, min_delta, stops_at):
    cb = EarlyStopping(patience=patience, min_delta=min_delta)
    assert Scripted(values).run(cb) == stops_at and cb.stopped_epoch == stops_at


def test_early_stopping_in_the_loop_on_a_metric(tmp_path):
    cb = EarlyStopping('accuracy', patience=1)
    assert cb.mode == 'max'
    _fit(30, [CSVLogger(tmp_path / 'h.csv'), cb])
    acc = [float(r[3]) for r in list(csv.reader((tmp_path / 'h.csv').open()))[1:]]
    # the loop stopped at the first epoch that did not beat the best before it
    first_flat = next(i for i in range(1, len(acc)) if acc[i] <= max(acc[:i]))
    assert cb.stopped_epoch == first_flat == len(acc) - 1 < 29 and cb.best == max(acc)
    with pytest.raises(ValueError, match=r"monitors 'f1', but the epoch gives \['val_loss', 'accuracy'\]"):
        _fit(1, [EarlyStopping('f1')])
    with pytest.raises(ValueError, match='patience must be a positive integer'):
        EarlyStopping(patience=0)


def test_csv_logger_writes_every_epoch_atomically(tmp_path):
    path = tmp_path / 'logs' / 'history.csv'
    result = _fit(3, [CSVLogger(path)])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ['epoch', 'trn_loss', 'val_loss', 'accuracy']
    assert [r[0] for r in rows[1:]] == ['0', '1', '2']
    np.testing.assert_allclose([float(v) for v in rows[-1][2:]], result)
    assert [p.name for p in path.parent.iterdir()] == ['history.csv']  # no temporary left behind
    _fit(2, [CSVLogger(path, append=True)])
    assert [r[0] for r in csv.reader(path.open())][1:] == ['0', '1', '2', '0', '1']
    _fit(1, [CSVLogger(path)])
    assert len(path.read_text().splitlines()) == 2  # without append: a fresh file


def test_epoch_names_fall_back_when_the_count_differs():
    state = SimpleNamespace(learn=SimpleNamespace(metrics=[accuracy]))
    assert epoch_names(state, 2) == ['val_loss', 'accuracy']
    assert epoch_names(state, 3) == ['val_loss', 'metric_1', 'metric_2']


def test_tensorboard_logs_loss_lrs_and_epoch_values(tmp_path, monkeypatch):
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            written.append(('flush',))

    monkeypatch.setattr(callbacks_mod.importlib.util, 'find_spec', lambda name: object())
    monkeypatch.setattr(TensorBoardCallback, '_writer', lambda self: Writer())
    cb = TensorBoardCallback(tmp_path / 'runs')
    _fit(2, [cb], lr=0.05)
    tags = [w[0] for w in written]
    assert tags.count('train/smooth_loss') == 6 and tags.count('lr/group_0') == 6  # 3 batches x 2
    assert [w[1] for w in written if w[0] == 'lr/group_0'] == [0.05] * 6
    assert [w[2] for w in written if w[0] == 'valid/accuracy'] == [3, 6]


def test_tensorboard_without_the_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)
    monkeypatch.setattr(callbacks_mod.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(ImportError, match='pip install tensorboard'):
        TensorBoardCallback('runs')
