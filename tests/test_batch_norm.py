"""Unfreezing carries the body's BatchNorm layers to the data's statistics without changing the
model (batch_norm.py), on a small conv net and on the tiny architecture."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fastlearn.batch_norm import batch_norm_layers, carry_to_data_stats


def _net() -> nn.Sequential:
    """Two conv + BatchNorm layers whose 'pretrained' statistics are far from the data's below."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3),
                        nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(-1.0)
                m.running_var.fill_(9.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _batches(n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(2.0 + 0.3 * torch.randn(16, 3, 12, 12, generator=g), torch.zeros(16)) for _ in range(n)]


def test_carrying_keeps_what_the_model_computes_in_eval_mode():
    net, batches = _net(), _batches()
    x = batches[0][0]
    before = net(x)
    assert carry_to_data_stats(net, batch_norm_layers([net]), batches) == 2
    assert torch.allclose(net(x), before, atol=1e-5)
    assert not net.training, 'left in the mode it was in'


def test_after_carrying_train_mode_computes_nearly_what_eval_mode_did():
    """The jump unfreezing used to make: train mode normalises with each batch's statistics."""
    net, batches = _net(), _batches()
    x = _batches(1, seed=1)[0][0]

    def jump(net: nn.Module) -> float:  # on a copy: a train-mode forward moves the statistics
        with torch.no_grad():
            want = net(x)
            return float((copy.deepcopy(net).train()(x) - want).abs().mean() / want.abs().mean())

    uncarried = jump(net)
    carry_to_data_stats(net, batch_norm_layers([net]), batches)
    assert uncarried > 0.3 and jump(net) < uncarried / 5, (uncarried, jump(net))


def test_the_statistics_are_the_datas_and_only_max_batches_are_read():
    net, batches = _net(), _batches(6)
    bn = net[1]
    carry_to_data_stats(net, [bn], batches, max_batches=2)
    with torch.no_grad():
        conv = torch.cat([net[0](x) for x, _ in batches[:2]])
    assert bn.running_mean == pytest.approx(conv.mean((0, 2, 3)), abs=1e-5)
    assert bn.running_var == pytest.approx(conv.var((0, 2, 3), unbiased=False), rel=1e-4)
    assert net[4].running_mean.eq(-1).all(), 'a layer not asked for is left alone'


def test_layers_without_running_statistics_or_affine_are_not_carried():
    net = nn.Sequential(nn.BatchNorm2d(3, affine=False), nn.BatchNorm2d(3, track_running_stats=False),
                        nn.BatchNorm1d(2))
    assert batch_norm_layers([net]) == [net[2]]


def test_an_empty_loader_is_a_clear_error():
    net = _net()
    with pytest.raises(ValueError, match='no batches: the training loader is empty'):
        carry_to_data_stats(net, batch_norm_layers([net]), [])


@pytest.fixture
def learn(tiny_learner):
    assert not tiny_learner._bn_freeze, "the tiny architecture's statistics train once unfrozen"
    return tiny_learner


def test_unfreeze_keeps_the_predictions_and_repr_says_so(learn):
    learn.fit(1e-2, 1)
    before = learn.predict()
    body = batch_norm_layers(learn.layer_groups[:-1])
    means = [m.running_mean.clone() for m in body]
    learn.unfreeze()
    assert not all(torch.equal(a, m.running_mean) for a, m in zip(means, body)), 'statistics moved'
    np.testing.assert_allclose(learn.predict(), before, atol=1e-4)
    assert "body BatchNorm trains, carried to the data's statistics" in repr(learn)


def test_unfreeze_with_frozen_statistics_changes_nothing(learn):
    learn.bn_freeze(True)
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.unfreeze()
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())


def test_letting_the_statistics_train_after_unfreezing_carries_them_too(learn):
    learn.bn_freeze(True)
    learn.unfreeze()
    before = learn.predict()
    body = batch_norm_layers(learn.layer_groups[:-1])
    means = [m.running_mean.clone() for m in body]
    learn.bn_freeze(False)
    assert not all(torch.equal(a, m.running_mean) for a, m in zip(means, body))
    np.testing.assert_allclose(learn.predict(), before, atol=1e-4)


def test_unfreezing_draws_nothing_from_torchs_generator(learn):
    state = torch.random.get_rng_state()
    learn.unfreeze()
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize('carried', [True, False])
def test_statistics_that_start_to_train_no_longer_move_the_model(learn, carried):
    """The issue's reproduction, with every rate at (nearly) 0 so that only the statistics move:
    uncarried, one unfrozen epoch changes the validation loss; carried, it stays where it was."""
    learn.fit(1e-2, 2)
    before = learn.fit(1e-9, 1)[0]
    if not carried:
        learn._carry_batch_norm = lambda groups: None  # what unfreeze() did before batch_norm.py
    learn.unfreeze()
    after = learn.fit(1e-9, 1)[0]
    # measured: 0.484 -> 0.450 carried (batch noise), 0.484 -> 3.01 uncarried
    if carried:
        assert after == pytest.approx(before, rel=0.1)
    else:
        assert after > 3 * before


def test_the_courses_unfreeze_then_bn_freeze_keeps_the_pretrained_statistics(learn):
    """Lesson 1 calls `learn.unfreeze(); learn.bn_freeze(True)`: frozen statistics are ImageNet's."""
    learn.fit(1e-2, 1)
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.unfreeze()
    learn.bn_freeze(True)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    learn.fit(1e-2, 1)
    learn.bn_freeze(False)  # carried again, from where it is now
    learn.fit(1e-9, 1)
    trained = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.bn_freeze(True)  # after a fit the statistics are the model's own: frozen as they are
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in trained.items())
