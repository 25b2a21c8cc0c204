"""LayerOptimizer and lr_range: groups, per-group lrs and wds, slices, errors with numbers."""
import re

import numpy as np
import pytest
import torch
from torch import nn

from fastlearn.layer_optimizer import LayerOptimizer, lr_range, lrs_example, sgd_momentum

THREE_LRS_MSG = ('lrs has 2 values but the model has 3 layer groups; pass one per group, '
                 'e.g. np.array([1e-4, 1e-3, 1e-2])')


def three_groups():
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), nn.Linear(4, 3), nn.Linear(3, 2)]


# ------------------------------------------------------------------ lr_range

def test_lr_range_scalar_broadcasts():
    np.testing.assert_array_equal(lr_range(1e-2, 3), [1e-2] * 3)
    np.testing.assert_array_equal(lr_range([1e-2], 3), [1e-2] * 3)


def test_lr_range_array_kept_in_order():
    lrs = np.array([1e-4, 1e-3, 1e-2])
    out = lr_range(lrs, 3)
    assert isinstance(out, np.ndarray) and out.dtype == float
    np.testing.assert_array_equal(out, lrs)


def test_lr_range_wrong_length_message_is_exact():
    with pytest.raises(ValueError, match=re.escape(THREE_LRS_MSG)):
        lr_range(np.array([1e-3, 1e-2]), 3)
    with pytest.raises(ValueError, match=r'lrs has 4 values but the model has 2 layer groups'):
        lr_range([1, 2, 3, 4], 2)


def test_lr_range_slice_lo_hi_is_geometric():
    np.testing.assert_allclose(lr_range(slice(1e-4, 1e-2), 3), [1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(lr_range(slice(1e-5, 1e-2), 4), [1e-5, 1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(lr_range(slice(1e-3, 1e-2), 2), [1e-3, 1e-2])


def test_lr_range_slice_hi_gives_hi_over_10_to_the_rest():
    np.testing.assert_allclose(lr_range(slice(1e-2), 3), [1e-3, 1e-3, 1e-2])


def test_lr_range_one_group():
    np.testing.assert_allclose(lr_range(slice(1e-4, 1e-2), 1), [1e-2])
    np.testing.assert_allclose(lr_range(slice(1e-2), 1), [1e-2])
    np.testing.assert_allclose(lr_range(3e-3, 1), [3e-3])


@pytest.mark.parametrize('bad', [slice(None), slice(1e-2, 1e-4), slice(0, 1e-2), -1e-3,
                                 float('nan'), [1e-3, float('inf'), 1e-2], slice(1, 2, 3)])
def test_lr_range_rejects_nonsense(bad):
    with pytest.raises(ValueError, match='lrs'):
        lr_range(bad, 3)


def test_lrs_example_matches_group_count():
    assert lrs_example(3) == 'np.array([1e-4, 1e-3, 1e-2])'
    assert lrs_example(2) == 'np.array([1e-3, 1e-2])'


# ------------------------------------------------------------------ LayerOptimizer

def test_one_param_group_per_layer_group_frozen_included():
    groups = three_groups()
    for p in groups[0].parameters():
        p.requires_grad_(False)
    lo = LayerOptimizer(sgd_momentum, groups, np.array([1e-4, 1e-3, 1e-2]))
    assert lo.n_groups == 3
    assert [len(g['params']) for g in lo.opt.param_groups] == [4, 2, 2]
    assert lo.lrs == pytest.approx([1e-4, 1e-3, 1e-2])
    assert lo.wds == [0.0, 0.0, 0.0]
    assert isinstance(lo.opt, torch.optim.SGD) and lo.opt.param_groups[0]['momentum'] == 0.9


def test_frozen_group_is_skipped_by_step():
    groups = three_groups()
    for p in groups[0].parameters():
        p.requires_grad_(False)
    lo = LayerOptimizer(None, groups, 0.1)
    before = [p.detach().clone() for p in nn.ModuleList(groups).parameters()]
    x = torch.randn(8, 4)
    nn.Sequential(*groups)(x).pow(2).mean().backward()
    lo.step()
    after = list(nn.ModuleList(groups).parameters())
    assert all(torch.equal(b, a) for b, a in zip(before[:4], after[:4]))
    assert not any(torch.equal(b, a) for b, a in zip(before[4:], after[4:]))


def test_groups_as_param_lists_and_single_module():
    w, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(2))
    lo = LayerOptimizer(sgd_momentum, [[w], [b]], 1e-2)
    assert [g['params'] for g in lo.opt.param_groups] == [[w], [b]]
    lo1 = LayerOptimizer(sgd_momentum, nn.Linear(2, 2), 1e-2)
    assert lo1.n_groups == 1


def test_params_not_repeated_within_a_group():
    lin = nn.Linear(2, 2)
    lo = LayerOptimizer(sgd_momentum, [[lin, lin.weight]], 1e-2)
    assert len(lo.opt.param_groups[0]['params']) == 2


def test_set_lrs_and_wds_scalar_array_slice():
    lo = LayerOptimizer(sgd_momentum, three_groups(), 1e-2, wds=1e-4)
    assert lo.wds == pytest.approx([1e-4] * 3)
    assert [g['weight_decay'] for g in lo.opt.param_groups] == pytest.approx([1e-4] * 3)
    lo.set_lrs(slice(1e-4, 1e-2))
    assert lo.lrs == pytest.approx([1e-4, 1e-3, 1e-2])
    lo.set_lrs(np.array([1e-3, 2e-3, 3e-3]))
    assert lo.lrs == pytest.approx([1e-3, 2e-3, 3e-3])
    lo.set_wds([1e-5, 1e-4, 1e-3])
    assert lo.wds == pytest.approx([1e-5, 1e-4, 1e-3])
    lo.set_wds(None)
    assert lo.wds == [0.0] * 3


def test_wrong_lengths_raise_with_counts():
    lo = LayerOptimizer(sgd_momentum, three_groups(), 1e-2)
    with pytest.raises(ValueError, match=re.escape(THREE_LRS_MSG)):
        lo.set_lrs([1e-3, 1e-2])
    with pytest.raises(ValueError, match=r'wds has 2 values but the model has 3 layer groups; '
                                         r'pass one per group, e\.g\. \[1e-4, 1e-4, 1e-4\]'):
        lo.set_wds([1e-4, 1e-4])
    with pytest.raises(ValueError, match=re.escape(THREE_LRS_MSG)):
        LayerOptimizer(sgd_momentum, three_groups(), [1e-3, 1e-2])


def test_empty_layer_groups_rejected():
    with pytest.raises(ValueError, match='layer_groups is empty'):
        LayerOptimizer(sgd_momentum, [], 1e-2)


def test_empty_first_group_allowed():
    # fastai 0.7's fallback for an unknown architecture had an empty first group
    lo = LayerOptimizer(sgd_momentum, [[], nn.Linear(2, 2)], np.array([1e-3, 1e-2]))
    assert lo.n_groups == 2 and lo.lrs == pytest.approx([1e-3, 1e-2])


def test_custom_opt_fn_receives_groups():
    lo = LayerOptimizer(torch.optim.Adam, three_groups(), np.array([1e-4, 1e-3, 1e-2]), wds=1e-2)
    assert isinstance(lo.opt, torch.optim.Adam)
    assert lo.lrs == pytest.approx([1e-4, 1e-3, 1e-2])
    assert [g['weight_decay'] for g in lo.opt.param_groups] == pytest.approx([1e-2] * 3)


def test_decoupled_weight_decay_shrinks_by_lr_times_wd():
    p = nn.Parameter(torch.full((3,), 2.0))
    lo = LayerOptimizer(sgd_momentum, [[p]], 0.1, wds=0.5, decoupled=True)
    assert lo.opt.param_groups[0]['weight_decay'] == 0.0 and lo.wds == [0.5]
    p.grad = torch.zeros(3)  # no gradient step: only the decay acts
    lo.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 2.0 * (1 - 0.1 * 0.5)))


def test_coupled_weight_decay_is_l2_in_the_gradient():
    p = nn.Parameter(torch.full((3,), 2.0))
    lo = LayerOptimizer(lambda g: torch.optim.SGD(g, lr=0.1), [[p]], 0.1, wds=0.5)
    p.grad = torch.zeros(3)
    lo.step()  # grad + wd*p = 1.0 -> p - 0.1*1.0
    torch.testing.assert_close(p.detach(), torch.full((3,), 1.9))


def test_state_dict_round_trip_restores_lrs_and_momentum():
    groups = three_groups()
    lo = LayerOptimizer(sgd_momentum, groups, np.array([1e-4, 1e-3, 1e-2]), wds=1e-4)
    nn.Sequential(*groups)(torch.randn(8, 4)).sum().backward()
    lo.step()
    snap = {k: (v if k != 'state' else {i: {n: t.clone() for n, t in s.items()}
                                        for i, s in v.items()})
            for k, v in lo.state_dict().items()}
    lo.set_lrs(1.0)
    lo.set_wds(0.0)
    lo.opt.state.clear()
    lo.load_state_dict(snap)
    assert lo.lrs == pytest.approx([1e-4, 1e-3, 1e-2])
    assert lo.wds == pytest.approx([1e-4] * 3)
    assert len(lo.opt.state) == 8


def test_repr_shows_lrs_and_wds():
    lo = LayerOptimizer(sgd_momentum, three_groups(), np.array([1e-4, 1e-3, 1e-2]), wds=1e-4)
    r = repr(lo)
    assert 'SGD' in r and '3 groups' in r
    assert 'lrs=[0.0001, 0.001, 0.01]' in r and 'wds=[0.0001, 0.0001, 0.0001]' in r
