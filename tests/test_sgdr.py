"""Schedules and callbacks with no model: pure functions against a plain-loop reference, and the
callbacks driven through their hooks by a fake loop over a fake state."""
import math
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from fastlearn.core import sum_geom
from fastlearn.layer_optimizer import LayerOptimizer, sgd_momentum
from fastlearn.sgdr import (Callback, CosAnneal, CycleSaver, LR_Finder, Recorder, SaveBestModel,
                            cos_anneal, cycle_boundaries, cycle_index, exp_lr, lin_lr,
                            sgdr_multiplier, suggest_lr)

matplotlib.use('Agg')


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close('all')


# ------------------------------------------------------------------ a reference and a fake loop

def reference_sgdr(n_batches, cycle_len, cycle_mult, n_cycle, warm_up=False):
    """fastai 0.7's CosAnneal as a plain stateful loop: a counter within the cycle that wraps
    and grows the cycle by cycle_mult."""
    nb, cycle_iter, out = n_batches * cycle_len, 0, []
    total = int(round(n_batches * sum_geom(cycle_len, cycle_mult, n_cycle)))
    for it in range(total):
        if warm_up and it < n_batches * cycle_len / 20:
            out.append(0.01)
        else:
            out.append((np.cos(np.pi * cycle_iter / nb) + 1) / 2)
        cycle_iter += 1
        if cycle_iter == nb:
            cycle_iter, nb = 0, nb * cycle_mult
    return out


class FakeLayerOpt:
    """Only what callbacks touch: `lrs` and `set_lrs`."""

    def __init__(self, lrs):
        self._lrs = [float(x) for x in lrs]

    @property
    def lrs(self):
        return list(self._lrs)

    def set_lrs(self, lrs):
        lrs = np.broadcast_to(np.asarray(lrs, dtype=float), (len(self._lrs),))
        self._lrs = [float(x) for x in lrs]


class FakeLearn:
    def __init__(self):
        self.saved = []

    def save(self, name):
        self.saved.append(name)


def drive(callbacks, layer_opt, n_batches, n_epochs, loss_fn=lambda it, lr: 1.0,
          metrics_fn=lambda epoch: [1.0]):
    """The loop the lead's model.fit runs, as the architecture describes it. Returns the state
    and the lrs of every group in force during each batch."""
    state = SimpleNamespace(layer_opt=layer_opt, n_batches=n_batches, n_epochs=n_epochs, epoch=0,
                            iteration=0, stop=False, smooth_loss=float('nan'), learn=FakeLearn())
    used, avg = [], 0.0
    for cb in callbacks:
        cb.on_train_begin(state)
    for epoch in range(n_epochs):
        state.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_begin(state)
        for _ in range(n_batches):
            for cb in callbacks:
                cb.on_batch_begin(state)
            used.append(layer_opt.lrs)
            loss = float(loss_fn(state.iteration, layer_opt.lrs[-1]))
            avg = 0.98 * avg + 0.02 * loss
            state.smooth_loss = avg / (1 - 0.98 ** (state.iteration + 1))
            for cb in callbacks:
                cb.on_batch_end(state, loss)
            state.iteration += 1
            if state.stop:
                break
        if state.stop:
            break
        for cb in callbacks:
            cb.on_epoch_end(state, metrics_fn(epoch))
    for cb in callbacks:
        cb.on_train_end(state)
    return state, np.array(used)


# ------------------------------------------------------------------ pure schedules

def test_cos_anneal_golden_points():
    assert cos_anneal(0, 10) == 1.0
    assert cos_anneal(5, 10) == pytest.approx(0.5)
    assert cos_anneal(10, 10) == pytest.approx(0.0)
    assert cos_anneal(2.5, 10) == pytest.approx((1 + math.sqrt(0.5)) / 2)


@pytest.mark.parametrize('n_batches', [1, 3, 7])
@pytest.mark.parametrize('cycle_len', [1, 2])
@pytest.mark.parametrize('cycle_mult', [1, 2, 3])
@pytest.mark.parametrize('warm_up', [False, True])
def test_sgdr_matches_plain_loop_reference(n_batches, cycle_len, cycle_mult, warm_up):
    ref = reference_sgdr(n_batches, cycle_len, cycle_mult, 3, warm_up)
    got = [sgdr_multiplier(i, n_batches, cycle_len, cycle_mult, 3, warm_up=warm_up)
           for i in range(len(ref))]
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_restarts_for_cycle_mult_2_at_geometric_sums():
    nb, cl = 5, 2
    starts = [nb * cl * s for s in (0, 1, 1 + 2, 1 + 2 + 4)]  # 0, 10, 30, 70
    assert cycle_boundaries(nb, cl, 2, 4) == starts
    ms = [sgdr_multiplier(i, nb, cl, 2, 4) for i in range(nb * cl * 15)]
    assert [i for i, m in enumerate(ms) if m == 1.0] == starts
    assert all(ms[i] < ms[i - 1] for i in range(1, len(ms)) if i not in starts)


def test_restarts_for_cycle_mult_1_every_cycle():
    nb, cl = 4, 3
    assert cycle_boundaries(nb, cl, 1, 3) == [0, 12, 24]
    ms = [sgdr_multiplier(i, nb, cl, 1) for i in range(36)]
    assert [i for i, m in enumerate(ms) if m == 1.0] == [0, 12, 24]
    np.testing.assert_allclose(ms[:12], ms[12:24])


def test_midpoint_is_half_and_cycle_ends_near_zero():
    assert sgdr_multiplier(5, 10, 1, 1) == pytest.approx(0.5)
    assert sgdr_multiplier(10, 10, 1, 2) == 1.0
    assert sgdr_multiplier(20, 10, 1, 2) == pytest.approx(0.5)  # middle of the 20-iteration cycle
    assert 0 < sgdr_multiplier(29, 10, 1, 2) < 0.01


def test_one_batch_epochs():
    # cycle_len=1, one batch: every iteration is a restart, the lr stays at the base
    assert [sgdr_multiplier(i, 1, 1, 1) for i in range(5)] == [1.0] * 5
    # growing cycles of 1, 2, 4 iterations
    np.testing.assert_allclose([sgdr_multiplier(i, 1, 1, 2) for i in range(7)],
                               [1, 1, 0.5, 1, cos_anneal(1, 4), 0.5, cos_anneal(3, 4)])


def test_fractional_cycle_len_and_non_integer_mult():
    ref = reference_sgdr(4, 1, 1.5, 3)  # cycles of 4, 6, 9 iterations
    got = [sgdr_multiplier(i, 4, 1, 1.5) for i in range(len(ref))]
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert cycle_boundaries(4, 1, 1.5, 3) == [0, 4, 10]
    assert cycle_boundaries(2, 0.5, 1, 4) == [0, 1, 2, 3]


def test_warm_up_is_first_5_percent_of_first_cycle_only():
    ms = [sgdr_multiplier(i, 40, 1, 1, warm_up=True) for i in range(80)]
    assert ms[:2] == [0.01, 0.01]
    assert ms[2] == pytest.approx(cos_anneal(2, 40))  # the cosine resumes where it would be
    assert ms[40] == 1.0  # the second cycle has no warm-up
    assert sgdr_multiplier(0, 40, 1, 1) == 1.0  # and it is off by default


def test_cycle_index_closed_form_at_boundaries():
    assert [cycle_index(e, 1, 2) for e in range(8)] == [0, 1, 1, 2, 2, 2, 2, 3]
    assert [cycle_index(e, 2, 1) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    big = 10 * sum_geom(1, 3, 12)
    assert cycle_index(big, 10, 3) == 12 and cycle_index(big - 1, 10, 3) == 11


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match='cycle_mult must be >= 1.*got 0.5'):
        sgdr_multiplier(0, 10, 1, 0.5)
    with pytest.raises(ValueError, match='n_batches .*got 0'):
        sgdr_multiplier(0, 0, 1, 1)
    with pytest.raises(ValueError, match='cycle_len must be > 0'):
        CosAnneal(0)
    with pytest.raises(ValueError,
                       match=r'iteration 30 is past the end of 2 cycles \(30 iterations\)'):
        sgdr_multiplier(30, 10, 1, 2, n_cycle=2)


def test_exp_and_lin_lr():
    assert exp_lr(0, 100, 1e-5, 10) == pytest.approx(1e-5)
    assert exp_lr(50, 100, 1e-5, 10) == pytest.approx(math.sqrt(1e-5 * 10))
    assert exp_lr(100, 100, 1e-5, 10) == pytest.approx(10)
    assert lin_lr(25, 100, 0, 1) == pytest.approx(0.25)


# ------------------------------------------------------------------ CosAnneal through the hooks

def test_callback_base_hooks_are_noops():
    cb, s = Callback(), SimpleNamespace()
    for hook in ('on_train_begin', 'on_epoch_begin', 'on_batch_begin', 'on_train_end'):
        assert getattr(cb, hook)(s) is None
    assert cb.on_batch_end(s, 1.0) is None and cb.on_epoch_end(s, [1.0]) is None


@pytest.mark.parametrize('cycle_len,cycle_mult,n_cycle', [(1, 2, 3), (1, 1, 3), (2, 1, 2)])
def test_cos_anneal_callback_keeps_group_ratios(cycle_len, cycle_mult, n_cycle):
    base = np.array([1e-4, 1e-3, 1e-2])
    n_batches = 6
    n_epochs = int(sum_geom(cycle_len, cycle_mult, n_cycle))
    _, used = drive([CosAnneal(cycle_len, cycle_mult)], FakeLayerOpt(base), n_batches, n_epochs)
    ref = np.array(reference_sgdr(n_batches, cycle_len, cycle_mult, n_cycle))
    assert used.shape == (len(ref), 3)
    np.testing.assert_allclose(used, ref[:, None] * base[None, :], rtol=1e-12)
    np.testing.assert_allclose(used / used[:, 2:], np.tile([0.01, 0.1, 1], (len(ref), 1)))
    restarts = cycle_boundaries(n_batches, cycle_len, cycle_mult, n_cycle)
    np.testing.assert_allclose(used[restarts], np.tile(base, (n_cycle, 1)))


def test_cos_anneal_with_real_layer_optimizer_and_one_batch_epoch():
    lo = LayerOptimizer(sgd_momentum, [nn.Linear(2, 2), nn.Linear(2, 2)], np.array([1e-3, 1e-2]))
    _, used = drive([CosAnneal(1, 2)], lo, n_batches=1, n_epochs=7)
    np.testing.assert_allclose(used[:, 1], 1e-2 * np.array(reference_sgdr(1, 1, 2, 3)))
    np.testing.assert_allclose(used[:, 0] / used[:, 1], 0.1)


def test_cos_anneal_counts_from_train_begin():
    cb, lo = CosAnneal(1), FakeLayerOpt([1.0])
    state = SimpleNamespace(layer_opt=lo, n_batches=4, iteration=100)
    cb.on_train_begin(state)
    cb.on_batch_begin(state)
    assert lo.lrs == [1.0]
    state.iteration = 102
    cb.on_batch_begin(state)
    assert lo.lrs == [pytest.approx(0.5)]


# ------------------------------------------------------------------ LR_Finder

def test_lr_finder_exponential_values_and_group_ratios():
    lo = FakeLayerOpt([1e-3, 1e-2, 1e-1])
    state, used = drive([LR_Finder(1e-5, 10)], lo, n_batches=50, n_epochs=1)
    assert len(used) == 50 and not math.isnan(used[0, 0])
    expected = [1e-5 * (10 / 1e-5) ** (i / 50) for i in range(50)]
    np.testing.assert_allclose(used[:, 2], expected, rtol=1e-12)
    np.testing.assert_allclose(used / used[:, 2:], np.tile([0.01, 0.1, 1], (50, 1)))


def test_lr_finder_linear_and_fixed_n_iter_stops_the_loop():
    state, used = drive([LR_Finder(0, 1, 20, linear=True)], FakeLayerOpt([1.0]), 8, 5)
    assert len(used) == 20 and state.stop
    np.testing.assert_allclose(used[:, 0], np.arange(20) / 20)


def test_lr_finder_stops_at_nan():
    loss = lambda it, lr: float('nan') if it == 7 else 1.0  # noqa: E731
    state, used = drive([LR_Finder()], FakeLayerOpt([1.0]), 100, 1, loss)
    assert state.stop and len(used) == 8


def test_lr_finder_stops_at_4x_best_after_grace():
    # a falling loss that explodes once the lr passes 1e-1
    loss = lambda it, lr: 1.0 if lr < 1e-1 else 1e6  # noqa: E731
    state, used = drive([LR_Finder(1e-5, 10)], FakeLayerOpt([1.0]), 100, 1, loss)
    assert state.stop
    first_big = next(i for i, lr in enumerate(used[:, 0]) if lr >= 1e-1)
    assert first_big < len(used) < 100
    # the smoothed loss passes 4x best within a few iterations of the jump
    assert len(used) - first_big < 5


def test_lr_finder_not_stopped_by_a_jump_before_iteration_10():
    # the first smoothed losses are tiny, then the loss is 100x higher: within the grace
    # period no best is kept, so the run goes on (it would stop at iteration 3 without it)
    loss = lambda it, lr: 0.01 if it < 3 else 1.0  # noqa: E731
    state, used = drive([LR_Finder()], FakeLayerOpt([1.0]), 30, 1, loss)
    assert len(used) == 30 and not state.stop
    # the same jump after the grace period stops the run
    loss = lambda it, lr: 0.01 if it < 40 else 1.0  # noqa: E731
    state, used = drive([LR_Finder()], FakeLayerOpt([1.0]), 100, 1, loss)
    assert state.stop and 40 < len(used) < 50


def test_lr_finder_stop_div_off_runs_to_the_end():
    loss = lambda it, lr: float('nan') if it > 5 else 1.0  # noqa: E731
    state, used = drive([LR_Finder(stop_div=False)], FakeLayerOpt([1.0]), 30, 1, loss)
    assert len(used) == 30


def test_lr_finder_argument_errors():
    with pytest.raises(ValueError, match='start_lr=0'):
        LR_Finder(0, 10)
    with pytest.raises(ValueError, match='n_iter must be >= 1'):
        LR_Finder(n_iter=0)


# ------------------------------------------------------------------ Recorder

def finder_run(n, explode_at=None):
    rec = Recorder()

    def loss(it, lr):  # a U with its floor at lr=1e-2, NaN from `explode_at` on
        if explode_at is not None and it >= explode_at:
            return float('nan')
        return (np.log10(lr) + 2) ** 2 + 1
    drive([LR_Finder(1e-5, 10, stop_div=False), rec], FakeLayerOpt([1e-3, 1e-1]), n, 1, loss)
    return rec


def test_recorder_records_every_iteration():
    rec = finder_run(100)
    assert len(rec.lrs) == len(rec.losses) == len(rec.raw_losses) == len(rec.group_lrs) == 100
    assert rec.iterations == list(range(100))
    assert rec.lrs[0] == pytest.approx(1e-5) and rec.group_lrs[0] == pytest.approx([1e-7, 1e-5])
    assert rec.epoch_metrics == [[1.0]]
    assert 'Recorder(100 iterations, 1 epochs' in repr(rec)


def test_recorder_epoch_metrics_and_reset_per_fit():
    rec = Recorder()
    drive([rec], FakeLayerOpt([0.1]), 3, 2, metrics_fn=lambda e: [0.5 - e / 10, 0.8 + e / 10])
    assert rec.epoch_metrics == [[0.5, 0.8], [0.4, pytest.approx(0.9)]]
    drive([rec], FakeLayerOpt([0.1]), 2, 1)
    assert len(rec.losses) == 2


def n_points(fig, line=0):
    return len(fig.axes[0].lines[line].get_xdata())


def test_plots_return_figures_with_the_right_points():
    from matplotlib.figure import Figure
    rec = finder_run(100)
    fig = rec.plot()
    assert isinstance(fig, Figure) and n_points(fig) == 100 - 10 - 5
    assert fig.axes[0].get_xscale() == 'log'
    assert n_points(rec.plot(n_skip=0, n_skip_end=0)) == 100
    assert n_points(rec.plot(10, 0)) == 90
    assert n_points(rec.plot_loss()) == 85
    fig = rec.plot_lr()
    assert len(fig.axes[0].lines) == 2 and n_points(fig, 1) == 100
    fig = rec.plot(suggestion=True)
    assert len(fig.axes[0].lines) == 2


def test_plots_with_few_points_are_not_empty():
    rec = finder_run(5)
    assert 2 <= n_points(rec.plot()) <= 5
    assert 2 <= n_points(rec.plot_loss()) <= 5
    assert n_points(Recorder().plot()) == 0  # nothing recorded: an empty figure, no error
    assert Recorder().plot_lr() is not None


def test_plot_drops_points_from_the_first_nan():
    rec = finder_run(100, explode_at=60)
    assert n_points(rec.plot(0, 0)) == 60


def test_plots_headless_save(tmp_path):
    finder_run(30).plot().savefig(tmp_path / 'lr.png')
    assert (tmp_path / 'lr.png').stat().st_size > 0


# ------------------------------------------------------------------ suggest_lr

def u_curve(n=100, floor_lr=1e-2, seed=0):
    lrs = np.geomspace(1e-5, 10, n)
    rng = np.random.default_rng(seed)
    return lrs, (np.log10(lrs) - np.log10(floor_lr)) ** 2 + 1 + rng.normal(0, 0.02, n)


def test_suggest_lr_left_of_the_minimum_on_a_u_curve():
    for seed in range(5):
        lrs, losses = u_curve(seed=seed)
        lr = suggest_lr(lrs, losses)
        lr_min = lrs[np.argmin(losses)]
        assert 1e-5 < lr < lr_min and lr > lr_min / 1000
        assert isinstance(lr, float)


def test_recorder_suggest_lr_on_a_finder_run():
    rec = finder_run(100)
    lr = rec.suggest_lr()
    assert 1e-4 < lr < 1e-2


def test_suggest_lr_ignores_nan_and_inf():
    lrs, losses = u_curve()
    losses[70:] = np.nan
    losses[65] = np.inf
    lr = suggest_lr(lrs, losses)
    assert math.isfinite(lr) and lr < lrs[65]


def test_suggest_lr_few_points_and_degenerate_curves():
    lrs = np.geomspace(1e-5, 1e-1, 5)
    assert math.isfinite(suggest_lr(lrs, [5.0, 4.0, 3.0, 2.5, 2.4]))
    # a dip too short for a descent: 10x below the minimum's lr
    assert suggest_lr(lrs, [3.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(lrs[1] / 10)
    # only rising, or NaN from the start: the sweep diverged at once, and a guess would mislead
    with pytest.raises(ValueError, match=r'never fell below its first value.*start lr 1e-05.*start_lr=1e-08'):
        suggest_lr(lrs, [1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match='single finite point'):
        suggest_lr([1e-3], [1.0])
    with pytest.raises(ValueError, match='NaN/inf from the first step'):
        suggest_lr(lrs, [np.nan] * 5)
    with pytest.raises(ValueError, match='no losses recorded'):
        suggest_lr([], [])
    with pytest.raises(ValueError, match=r'\(3,\) and \(2,\)'):
        suggest_lr([1, 2, 3], [1, 2])


# ------------------------------------------------------------------ savers

def test_save_best_model_on_first_metric_higher_is_better():
    accs = [0.80, 0.85, 0.83, 0.85, 0.90]
    losses = [0.50, 0.40, 0.30, 0.45, 0.45]  # epoch 3 ties epoch 1 on accuracy, with a worse loss
    state, _ = drive([SaveBestModel('best')], FakeLayerOpt([0.1]), 2, 5,
                     metrics_fn=lambda e: [losses[e], accs[e]])
    assert state.learn.saved == ['best', 'best', 'best']  # epochs 0, 1 and 4


def test_save_best_model_tie_broken_by_lower_loss():
    cb, learn = SaveBestModel('b'), FakeLearn()
    s = SimpleNamespace(learn=learn)
    for m in ([0.5, 0.9], [0.4, 0.9], [0.6, 0.9], [float('nan'), 0.95]):
        cb.on_epoch_end(s, m)
    assert len(learn.saved) == 2


def test_save_best_model_without_metrics_uses_val_loss_and_mode_min():
    state, _ = drive([SaveBestModel('m')], FakeLayerOpt([0.1]), 1, 4,
                     metrics_fn=lambda e: [[0.5, 0.6, 0.4, 0.45][e]])
    assert len(state.learn.saved) == 2  # epochs 0 and 2
    errs = [0.3, 0.2, 0.25]
    state, _ = drive([SaveBestModel('e', mode='min')], FakeLayerOpt([0.1]), 1, 3,
                     metrics_fn=lambda e: [1.0, errs[e]])
    assert len(state.learn.saved) == 2
    with pytest.raises(ValueError, match="mode must be"):
        SaveBestModel('x', mode='best')


@pytest.mark.parametrize('cycle_len,cycle_mult,n_cycle,saved_after', [
    (1, 2, 3, [1, 3, 7]),
    (1, 1, 3, [1, 2, 3]),
    (2, 1, 2, [2, 4]),
    (2, 2, 2, [2, 6]),
])
def test_cycle_saver_names_and_epochs(cycle_len, cycle_mult, n_cycle, saved_after):
    n_epochs = int(sum_geom(cycle_len, cycle_mult, n_cycle))
    learn = FakeLearn()
    saves = []

    class Watch(Callback):
        def on_epoch_end(self, state, metrics):
            saves.append(list(state.learn.saved))

    cb = CycleSaver('snap', cycle_len, cycle_mult)
    state, _ = drive([cb, Watch()], FakeLayerOpt([0.1]), 3, n_epochs)
    learn = state.learn
    assert learn.saved == [f'snap_cyc_{i}' for i in range(n_cycle)]
    epochs_of_save = [next(e + 1 for e, s in enumerate(saves) if f'snap_cyc_{i}' in s)
                      for i in range(n_cycle)]
    assert epochs_of_save == saved_after


def test_cycle_saver_fractional_cycle_len():
    state, _ = drive([CycleSaver('h', 0.5)], FakeLayerOpt([0.1]), 2, 2)
    assert state.learn.saved == ['h_cyc_1', 'h_cyc_3']


def test_callbacks_need_only_the_documented_state(tmp_path):
    """A tiny real model trained by the fake loop with every callback at once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    lo = LayerOptimizer(sgd_momentum, [model[0], model[2]], np.array([1e-3, 1e-2]))
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def loss_fn(it, lr):
        lo.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        lo.step()
        return loss.item()

    rec = Recorder()
    cbs = [CosAnneal(1, 2), rec, SaveBestModel('best'), CycleSaver('c', 1, 2)]
    state, used = drive(cbs, lo, 4, 7, loss_fn, metrics_fn=lambda e: [1.0 / (e + 1)])
    assert len(rec.losses) == 28 and rec.losses[-1] < rec.losses[0]
    assert state.learn.saved.count('best') == 7 and 'c_cyc_2' in state.learn.saved
