"""The divergence guard every fit runs with, the per-group gradient clip, the architecture table's
fine-tuning defaults, and the best-model keeper of a recipe; on the tiny architecture."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fastlearn.conv_learner import ConvLearner, ImageClassifierData, tfms_from_model
from fastlearn.guards import DivergenceGuard, KeepBest, TrainingDiverged
from fastlearn.model import clip_grads


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data(image_folder, tiny_arch):
    return ImageClassifierData.from_paths(image_folder, bs=8, tfms=tfms_from_model(tiny_arch, 32),
                                          num_workers=0)


def _learner(arch, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return ConvLearner.pretrained(arch, data, device='cpu', quiet=True, **kw)


def _weights(learn):
    return {k: v.clone() for k, v in learn.model.state_dict().items()}


def test_a_nan_loss_stops_the_fit_and_puts_the_weights_back(tiny_arch, data):
    learn = _learner(tiny_arch, data)
    learn.fit(1e-2, 1)
    before = _weights(learn)
    with pytest.warns(TrainingDiverged, match=r'the loss rose to [0-9.e+]+, over 10x 0\.6931 \(the larger of '
                      r'its starting loss and a uniform guess\'s\), at epoch 0, batch 1 \(lr 1e\+06\)'
                      r'.*start of epoch 0.*lower learning '
                      r'rate.*lr_find') as caught:
        vals = learn.fit(1e6, 3)
    assert caught[0].filename == __file__, 'the warning points at the fit call'
    assert len(learn.sched.epoch_metrics) == 1, 'stopped in the first epoch'
    after = learn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'weights as before the fit'
    assert all(math.isfinite(v) for v in vals) and vals[1] >= 0.5
    learn.fit(1e-2, 1)  # and the learner trains on


def test_an_exploding_loss_restores_the_epoch_start_and_the_optimizer(tiny_arch, data):
    learn = _learner(tiny_arch, data)
    learn.fit(1e-2, 1)
    momentum = [s['momentum_buffer'].clone() for s in learn.layer_opt.opt.state.values()]

    class Explode:  # from the second epoch on, a rate that makes the loss explode
        def on_epoch_begin(self, state):
            if state.epoch == 1:
                state.layer_opt.set_lrs(50.0)
    epoch1 = {}

    class Keep:
        def on_epoch_begin(self, state):
            if state.epoch == 1:
                epoch1.update(_weights(learn))
    with pytest.warns(TrainingDiverged, match='at epoch 1'):
        learn.fit(1e-3, 3, callbacks=[Keep(), Explode()])
    assert all(torch.equal(epoch1[k], v) for k, v in learn.model.state_dict().items())
    assert len(learn.sched.epoch_metrics) == 2
    assert momentum  # the optimizer state came back with the weights: finite buffers
    assert all(torch.isfinite(s['momentum_buffer']).all() for s in learn.layer_opt.opt.state.values())


def test_guard_off_lets_nan_through(tiny_arch, data):
    learn = _learner(tiny_arch, data)
    with warnings.catch_warnings():
        warnings.simplefilter('error', TrainingDiverged)
        learn.fit(1e6, 3, guard=False)
    assert not all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert len(learn.sched.epoch_metrics) == 3


def test_guard_settings_are_checked():
    with pytest.raises(ValueError, match='factor must be > 1, got 0.5'):
        DivergenceGuard(factor=0.5)


@pytest.mark.parametrize('cycle_len', [0, -1, 0.0])
def test_cycle_len_zero_or_negative_is_refused(tiny_arch, data, cycle_len):
    learn = _learner(tiny_arch, data)
    with pytest.raises(ValueError, match=rf'cycle_len must be > 0 epochs .*got {cycle_len}'):
        learn.fit(1e-2, 2, cycle_len=cycle_len)


def test_lr_find_that_diverges_at_once_says_so(tiny_arch, data):
    learn = _learner(tiny_arch, data)
    learn.lr_find(start_lr=1e3, end_lr=1e6)
    with pytest.raises(ValueError, match=r'diverged at once from its start lr 1e\+03.*start_lr=1e\+00'):
        learn.sched.suggest_lr()


def test_clip_grads_per_group_and_together():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([{'params': [a]}, {'params': [b]}], lr=1)
    for clip, norms in ((None, (6.0, 8.0)), ([1.0, None], (1.0, 8.0)), (5.0, (3.0, 4.0))):
        a.grad, b.grad = torch.full((3,), 6 / 3 ** .5), torch.full((4,), 4.0)
        clip_grads(opt, clip)
        assert (a.grad.norm().item(), b.grad.norm().item()) == pytest.approx(norms, rel=1e-5)


def test_the_table_sets_batchnorm_and_clip_and_repr_shows_them(tiny_arch, data):
    plain = _learner(tiny_arch, data)
    assert plain.clip is None and not plain._bn_freeze
    assert ("BatchNorm trains, carried to the data's statistics as its group unfreezes, gradient clip none"
            in repr(plain))
    careful = _learner(dataclasses.replace(tiny_arch, bn_freeze=True, body_clip=1.0), data)
    assert careful.clip == [1.0, 1.0, None] and careful._bn_freeze
    assert 'BatchNorm frozen, gradient clip per group [1, 1, none]' in repr(careful)
    mine = _learner(dataclasses.replace(tiny_arch, body_clip=1.0), data, clip=0.5)
    assert mine.clip == 0.5, "the user's clip wins"


def _tensorflow_scaled(tiny_weights, tmp_path, k: float = 0.003):
    """The tiny architecture computing the very same function, parametrised the way TensorFlow's
    EfficientNet-Lite0 weights are: convolution weights k times smaller, BatchNorm running
    statistics (and eps) scaled to match. Eval outputs are unchanged; SGD's steps are not: a
    body weight's gradient grows 1/k while the weight shrinks k, so each step moves it 1/k**2
    further relative to its size."""
    from tiny import TINY, TinyNet
    state = torch.load(tiny_weights)
    for blk in ('block1', 'block2', 'block3'):
        state[f'{blk}.0.weight'] *= k
        state[f'{blk}.1.running_mean'] *= k
        state[f'{blk}.1.running_var'] *= k * k
    torch.save(state, tmp_path / 'tf_like.pth')

    def builder():
        net = TinyNet()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps *= k * k
        return net
    return dataclasses.replace(TINY, name='tiny_tf', builder=builder, weights=str(tmp_path / 'tf_like.pth'),
                               bn_freeze=True)


@pytest.mark.parametrize('seed', [0, 2])
def test_a_tensorflow_scaled_body_collapses_at_the_course_rates_unless_clipped(tiny_arch, tiny_weights,
                                                                               tmp_path, seed):
    """The fine-tuning collapse (issue: 'the body's weights are wrecked by the first steps at the
    course's rates'), reproduced: same function, same head phase, then one unfrozen epoch at
    [1e-4, 1e-3, 1e-2]. Without a clip the validation loss explodes and the accuracy falls to a
    guess; the table's fix for such weights (each body group's gradient norm clipped to 1) keeps
    the model at least as good as the head left it."""
    from conftest import make_image_folder
    root = make_image_folder(tmp_path / 'imgs', n_train=16, n_valid=8)
    tf_like = _tensorflow_scaled(tiny_weights, tmp_path)
    results = {}
    for name, arch in (('tiny', tiny_arch), ('unclipped', tf_like),
                       ('clipped', dataclasses.replace(tf_like, body_clip=1.0))):
        torch.manual_seed(seed)
        np.random.seed(seed)
        data = ImageClassifierData.from_paths(root, bs=8, tfms=tfms_from_model(arch, 32), num_workers=0)
        learn = _learner(arch, data)
        head = learn.fit(1e-2, 3)
        learn.unfreeze()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', TrainingDiverged)
            unfrozen = learn.fit(np.array([1e-4, 1e-3, 1e-2]), 1, cycle_len=1)
        results[name] = head, unfrozen
    (head, _), (head_tf, bad), (head_clip, good) = results['tiny'], results['unclipped'], results['clipped']
    assert head_tf == pytest.approx(head, abs=1e-4) and head_clip == pytest.approx(head, abs=1e-4), \
        'the same function: the head phase cannot tell the parametrisations apart'
    assert head[1] > 0.5, 'the head learned something'
    assert bad[0] > 3 * head[0] and bad[1] == 0.5, f'collapse without the clip: {bad}'
    assert good[0] <= head[0] and good[1] >= head[1], f'the clip keeps the head phase\'s model: {good}'


def test_keep_best_restores_the_best_epoch_across_fits(tiny_arch, data):
    learn = _learner(tiny_arch, data)
    best = KeepBest()
    learn.fit(1e-2, 3, callbacks=[best.phase('head')])
    scores = [(m[1], -m[0]) for m in learn.sched.epoch_metrics]   # accuracy, then the lower loss
    assert best.where == ('head', scores.index(max(scores))) and best.metrics[1] == 1.0
    kept = _weights(learn) if best.where == ('head', 2) else None
    with torch.no_grad():                     # a ruined model: the last layer's outputs swapped
        learn.model[-1][-1].weight.copy_(learn.model[-1][-1].weight.flip(0))
        learn.model[-1][-1].bias.copy_(learn.model[-1][-1].bias.flip(0))
    learn.fit(1e-9, 1, callbacks=[best.phase('ruined')])
    assert learn.sched.epoch_metrics[-1][1] == 0.0, 'the ruined epoch is worse'
    assert best.where[0] == 'head' and not best.improved_last
    assert best.restore(learn)
    assert learn.predict_with_targs()[0].argmax(1).tolist() == \
        learn.predict_with_targs()[1].tolist(), 'the best epoch is back'
    if kept is not None:
        assert all(torch.equal(kept[k], v) for k, v in learn.model.state_dict().items())
    assert repr(best) == f"KeepBest(('head', {best.where[1]}), {best.metrics})"


class _Epochs:
    """Every epoch's validation metrics, over several fits."""
    def __init__(self):
        self.metrics = []

    def on_epoch_end(self, state, metrics):
        self.metrics.append([float(m) for m in metrics])


def test_fine_tune_ends_at_its_best_epoch_when_the_unfrozen_cycle_ruins_the_body(tiny_weights, tmp_path,
                                                                                 capsys):
    """`fine_tune` keeps the best validation epoch of both cycles: here the unclipped
    TensorFlow-scaled body collapses in the unfrozen cycle (every group at base_lr/2) and the
    head's best epoch comes back, with its metrics; `keep_best=False` (fastai 2's) ends at the
    collapse."""
    from conftest import make_image_folder

    from fastlearn.metrics import accuracy
    root = make_image_folder(tmp_path / 'imgs', n_train=16, n_valid=8)
    tf_like = _tensorflow_scaled(tiny_weights, tmp_path)
    ends = {}
    for keep_best in (True, False):
        torch.manual_seed(0)
        np.random.seed(0)
        data = ImageClassifierData.from_paths(root, bs=8, tfms=tfms_from_model(tf_like, 32), num_workers=0)
        learn = _learner(tf_like, data)
        learn.quiet = False
        seen = _Epochs()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', TrainingDiverged)
            returned = learn.fine_tune(1, 1e-2, freeze_epochs=3, lr_mult=1, keep_best=keep_best,
                                       callbacks=[seen])
        ends[keep_best] = returned, accuracy(np.exp(learn.predict()), data.val_y), seen.metrics
    (kept, kept_acc, epochs), (last, last_acc, same_epochs) = ends[True], ends[False]
    assert epochs == same_epochs, 'keeping the best does not change the training'
    head, ruined = epochs[2], epochs[3]
    assert head[1] == 1.0 and ruined[0] > 3 * head[0] and ruined[1] <= 0.5, epochs
    assert kept == pytest.approx(head) and kept_acc == 1.0
    assert last == pytest.approx(ruined) and last_acc == ruined[1]
    out = capsys.readouterr().out
    assert (f'fine_tune: kept the best epoch (head cycle, epoch 2: val_loss {head[0]:.4f}, accuracy '
            f'1.0000); the last was worse (val_loss {ruined[0]:.4f}') in out
    assert out.count('kept the best epoch') == 1
