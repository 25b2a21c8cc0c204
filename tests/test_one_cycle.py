"""One cycle as a pure function, and `fit_one_cycle`, `fine_tune` and the course's `use_clr_beta`
through the learner (tiny architecture)."""
from __future__ import annotations


import numpy as np
import pytest

from fastlearn.one_cycle import one_cycle


def test_one_cycle_golden_points():
    assert one_cycle(0) == pytest.approx((1 / 25, 0.95))
    assert one_cycle(0.125) == pytest.approx((0.5 * (1 + 1 / 25), 0.90))   # half-way up
    assert one_cycle(0.25) == pytest.approx((1.0, 0.85))                   # the peak
    assert one_cycle(1.0) == pytest.approx((1 / 25e4, 0.95))
    lrs = [one_cycle(p)[0] for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(lrs))
    assert peak == 25 and np.all(np.diff(lrs[:peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)


def test_one_cycle_settings_are_checked():
    with pytest.raises(ValueError, match=r'pct_start must be in \[0, 1\], got 1.5'):
        one_cycle(0.1, pct_start=1.5)
    with pytest.raises(ValueError, match='div and final_div must be >= 1, got div=0.5'):
        one_cycle(0.1, div=0.5)


@pytest.fixture
def learn(tiny_learner):
    return tiny_learner


def test_fit_one_cycle_keeps_group_ratios_and_puts_momentum_back(learn):
    learn.unfreeze()
    learn.fit_one_cycle(2, slice(1e-4, 1e-2))     # 2 epochs of 3 batches
    g = np.array(learn.sched.group_lrs)
    assert g.shape == (6, 3)
    assert g[:, 2] / g[:, 0] == pytest.approx(np.full(6, 100.0))
    expected = [1e-2 * one_cycle(i / 6)[0] for i in range(6)]
    assert g[:, 2] == pytest.approx(expected)
    assert all(pg['momentum'] == 0.9 for pg in learn.layer_opt.opt.param_groups)


def test_fit_one_cycle_lowers_the_validation_loss(learn):
    before = learn.fit(1e-9, 1)[0]
    after = learn.fit_one_cycle(4, 1e-2)[0]
    assert after < before


def test_fine_tune_trains_the_head_then_everything(learn):
    learn.bn_freeze(True)
    learn.fine_tune(2, 1e-2)
    assert all(learn.trainable_groups())
    g = np.array(learn.sched.group_lrs)
    assert g.shape == (6, 3)
    # slice(1e-2/2/100, 1e-2/2), spread geometrically; the peak falls between two batches
    assert g.max(0) == pytest.approx([5e-5, 5e-4, 5e-3], rel=0.01)


def test_fine_tune_peaks_higher_while_the_bodys_batchnorm_statistics_train(learn, capsys):
    learn.quiet = False
    assert learn.body_bn_trains()
    learn.fine_tune(1, 1e-2)
    g = np.array(learn.sched.group_lrs)
    assert g.max(0) == pytest.approx([2e-4, 2e-3, 2e-2], rel=0.01)   # BN_TRAINS_LR_MULT 2
    assert 'peaks at 2x base_lr, 0.02 (not base_lr/2)' in capsys.readouterr().out
    learn.bn_freeze(True)
    assert not learn.body_bn_trains()


def test_use_clr_beta_is_one_cycle_under_the_course_name(learn):
    learn.fit(1e-2, 2, use_clr_beta=(10, 10, 0.95, 0.85))
    lrs = np.array(learn.sched.lrs)
    assert lrs[0] == pytest.approx(1e-3) and lrs.max() <= 1e-2
    assert learn.layer_opt.opt.param_groups[0]['momentum'] == 0.9
    with pytest.raises(ValueError, match='one cycle over the whole fit'):
        learn.fit(1e-2, 2, cycle_len=1, use_clr_beta=(10, 10))
    with pytest.raises(ValueError, match=r'use_clr_beta is \(div, pct\)'):
        learn.fit(1e-2, 2, use_clr_beta=(10,))
