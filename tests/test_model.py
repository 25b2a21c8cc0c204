"""The training loop without a learner: ArrayLoader batching, validate's weighting, the loop's
hooks and stop flag, predict order, epoch counts and what the loop shows on its bar."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastlearn.model as model_mod
from fastlearn.layer_optimizer import LayerOptimizer
from fastlearn.model import epochs_for, fit, predict_dl, validate
from fastlearn.precompute import ArrayLoader


def sizes(dl) -> list[int]:
    return [len(y) for _, y in dl]


# --- ArrayLoader -----------------------------------------------------------------------------

@pytest.mark.parametrize('n, shuffle, expected', [
    (32, False, [16, 16]), (32, True, [16, 16]),
    (33, False, [16, 16, 1]),   # in order, for evaluation: a batch of one is fine
    (33, True, [16, 17]),       # training: a last batch of one joins the one before
    (34, True, [16, 16, 2]),
    (5, True, [5]), (1, False, [1]), (0, True, []),
])
def test_array_loader_batches(n, shuffle, expected):
    dl = ArrayLoader(np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n), 16,
                     shuffle=shuffle)
    assert len(dl) == len(expected) and sizes(dl) == expected
    ys = torch.cat([y for _, y in dl]) if n else torch.zeros(0)
    assert sorted(ys.tolist()) == list(range(n))  # every row exactly once
    if not shuffle:
        assert ys.tolist() == list(range(n))
    for x, y in dl:
        assert torch.equal(x[:, 0], 2 * y.float())  # rows stay with their labels


def test_array_loader_shuffles_afresh_each_epoch_and_repeatably_with_a_seed():
    x, y = np.zeros((40, 1), np.float32), np.arange(40)
    dl = ArrayLoader(x, y, 8, shuffle=True, seed=3)
    first, second = [torch.cat([b for _, b in dl]).tolist() for _ in range(2)]
    assert first != second and first != list(range(40))
    again = ArrayLoader(x, y, 8, shuffle=True, seed=3)
    assert torch.cat([b for _, b in again]).tolist() == first


def test_array_loader_checks_its_inputs():
    with pytest.raises(ValueError, match='x has 3 rows but y has 2'):
        ArrayLoader(np.zeros((3, 2)), np.zeros(2), 4)
    with pytest.raises(ValueError, match='bs .* at least 1, got 0'):
        ArrayLoader(np.zeros((3, 2)), np.zeros(3), 0)


# --- validate --------------------------------------------------------------------------------

def test_validate_weights_each_batch_by_its_size():
    # Batches of 3 and 1 rows whose "loss" is the mean of x: 1 and 5.
    dl = [(torch.ones(3, 1), torch.zeros(3)), (torch.full((1, 1), 5.0), torch.zeros(1))]
    crit = lambda out, y: out.mean()  # noqa: E731
    metric = lambda preds, y: float(preds.max())  # noqa: E731
    loss, m = validate(nn.Identity(), dl, crit, [metric])
    assert loss == pytest.approx((3 * 1 + 1 * 5) / 4)  # 2, not the unweighted 3
    assert m == pytest.approx((3 * 1 + 1 * 5) / 4)


def test_validate_puts_the_model_in_eval_mode_and_applies_the_activation():
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.9))
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    seen = []
    loss, = validate(model, [(x, y)], F.cross_entropy, [], activation=None)
    loss2, acc = validate(model, [(x, y)], F.cross_entropy,
                          [lambda p, t: seen.append(p) or 0.0],
                          activation=lambda o: F.log_softmax(o, -1))
    assert not model.training and loss == loss2
    np.testing.assert_allclose(torch.exp(seen[0]).sum(1).numpy(), 1, rtol=1e-6)


# --- the loop --------------------------------------------------------------------------------

class Hooks:
    """Only some hooks, not a Callback subclass: the loop calls what exists."""

    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_epoch_begin(self, state):
        self.events.append(('epoch', state.epoch))

    def on_batch_end(self, state, loss):
        self.events.append(('batch', state.iteration))
        if state.iteration == self.stop_at:
            state.stop = True


def _problem(n=24):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return ArrayLoader(x.numpy(), y.numpy(), 8, shuffle=True), ArrayLoader(x.numpy(), y.numpy(), 8)


def test_fit_runs_every_batch_of_every_epoch_and_lowers_the_loss():
    trn, val = _problem()
    net = nn.Linear(4, 2)
    opt = LayerOptimizer(None, [net], 0.5)
    before = validate(net, val, F.cross_entropy)[0]
    hooks = Hooks()
    result = fit(net, trn, val, opt, F.cross_entropy, 4, callbacks=[hooks], quiet=True)
    assert [e for e in hooks.events if e[0] == 'epoch'] == [('epoch', i) for i in range(4)]
    assert [e[1] for e in hooks.events if e[0] == 'batch'] == list(range(12))
    assert len(result) == 1 and result[0] < 0.5 * before


def test_stop_ends_after_the_current_batch_and_still_validates():
    trn, val = _problem()
    hooks, net = Hooks(stop_at=1), nn.Linear(4, 2)
    result = fit(net, trn, val, LayerOptimizer(None, [net], 0.1), F.cross_entropy, 3,
                 callbacks=[hooks], quiet=True)
    assert hooks.events == [('epoch', 0), ('batch', 0), ('batch', 1)]
    assert len(result) == 1


def test_fit_prints_one_table_row_per_epoch(capsys):
    trn, val = _problem()
    net = nn.Linear(4, 2)
    fit(net, trn, val, LayerOptimizer(None, [net], 0.1), F.cross_entropy, 2,
        metrics=[lambda p, t: 0.5])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['epoch', 'trn_loss', 'val_loss', '<lambda>', 'time']
    assert [ln.split()[0] for ln in lines[1:]] == ['0', '1']


def test_predict_dl_keeps_loader_order():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    preds, targs = predict_dl(nn.Identity(), ArrayLoader(x, np.arange(10), 3))
    np.testing.assert_array_equal(preds[:, 0], np.arange(10))
    np.testing.assert_array_equal(targs, np.arange(10))
    empty = predict_dl(nn.Identity(), [])
    assert empty[0].shape == (0,)


@pytest.mark.parametrize('args, n', [((3, 1, 2), 7), ((3, None, 1), 3), ((2, 1, 1), 2),
                                     ((3, 2, 2), 14), ((1, 0.5, 1), 1), ((3, 0.5, 2), 4)])
def test_epochs_for(args, n):
    assert epochs_for(*args) == n


def test_fit_shows_epoch_of_n_and_the_loss_on_its_bar(monkeypatch):
    """The loop names the pass and feeds the smoothed loss to the bar (display is progress.py's)."""
    bars = []

    class Bar(list):
        def __init__(self, iterable, total, desc, quiet):
            super().__init__(iterable)
            self.desc, self.quiet, self.postfix, self.closed = desc, quiet, None, False
            bars.append(self)

        def set_postfix_str(self, s, refresh=True):
            self.postfix = s

        def close(self):
            self.closed = True

    monkeypatch.setattr(model_mod, 'progress_bar',
                        lambda it, total=None, desc='', *, quiet=False: Bar(it, total, desc, quiet))
    trn, val = _problem()
    net = nn.Linear(4, 2)
    fit(net, trn, val, LayerOptimizer(None, [net], 0.1), F.cross_entropy, 2)
    epoch_bars = [b for b in bars if b.desc.startswith('epoch')]
    assert [b.desc for b in epoch_bars] == ['epoch 1/2', 'epoch 2/2']
    assert all(b.closed and not b.quiet and b.postfix.startswith('loss 0.') for b in epoch_bars)
    assert [b.desc for b in bars if b.desc == 'validating'] == ['validating'] * 2
