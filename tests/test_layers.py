"""Concat pooling, the head's exact layers, and the helpers bodies are measured with."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from fastlearn.archs import get_body
from fastlearn.layers import (AdaptiveConcatPool2d, Flatten, bn_types, children, create_head,
                              init_kaiming, num_features, pool_flatten, set_trainable)
from tiny import TinyNet


def layer_types(m: nn.Module) -> list[type]:
    return [type(c) for c in m.children()]


BLOCK = [nn.BatchNorm1d, nn.Dropout, nn.Linear]


def test_concat_pool_is_max_then_avg():
    x = torch.randn(2, 5, 4, 4)
    out = AdaptiveConcatPool2d()(x)
    assert out.shape == (2, 10, 1, 1)
    torch.testing.assert_close(out[:, :5, 0, 0], x.amax((2, 3)))
    torch.testing.assert_close(out[:, 5:, 0, 0], x.mean((2, 3)))


def test_concat_pool_output_size():
    assert AdaptiveConcatPool2d(2)(torch.randn(1, 3, 8, 8)).shape == (1, 6, 2, 2)


def test_pool_flatten_gives_twice_the_channels():
    pf = pool_flatten()
    assert layer_types(pf) == [AdaptiveConcatPool2d, Flatten]
    assert pf(torch.randn(3, 7, 5, 5)).shape == (3, 14)
    assert Flatten()(torch.randn(2, 3, 4, 5)).shape == (2, 60)
    assert Flatten is nn.Flatten  # torch's layer under the course's name


def test_default_head_layers_and_sizes():
    head = create_head(1024, 37)
    assert layer_types(head) == [*BLOCK, nn.ReLU, *BLOCK]
    bn1, drop1, lin1, _, bn2, drop2, lin2 = head
    assert bn1.num_features == 1024 and bn2.num_features == 512
    assert (drop1.p, drop2.p) == (0.25, 0.5)
    assert (lin1.in_features, lin1.out_features) == (1024, 512)
    assert (lin2.in_features, lin2.out_features) == (512, 37)
    head.eval()
    out = head(torch.randn(4, 1024))
    assert out.shape == (4, 37)
    assert not torch.allclose(out.exp().sum(1), torch.ones(4))  # logits, no (log-)softmax inside


def test_scalar_ps_is_used_in_every_block():
    head = create_head(64, 3, ps=0.1)
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.1, 0.1]


def test_empty_xtra_fc_leaves_one_block():
    head = create_head(64, 3, xtra_fc=[])
    assert layer_types(head) == BLOCK
    assert head[1].p == 0.5 and (head[2].in_features, head[2].out_features) == (64, 3)


def test_two_hidden_layers():
    head = create_head(64, 3, xtra_fc=[512, 256])
    assert layer_types(head) == [*BLOCK, nn.ReLU, *BLOCK, nn.ReLU, *BLOCK]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == \
        [(64, 512), (512, 256), (256, 3)]
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.25, 0.25, 0.5]
    head = create_head(64, 3, ps=[0.1, 0.2, 0.3], xtra_fc=[512, 256])
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.1, 0.2, 0.3]


def test_ps_length_must_match_blocks():
    with pytest.raises(ValueError, match=r'ps has 3 values but xtra_fc=\[512\] gives 2 blocks'):
        create_head(64, 3, ps=[0.1, 0.2, 0.3], xtra_fc=[512])
    with pytest.raises(ValueError, match=r'dropout probabilities in \[0, 1\); got \[1.5, 0.5\]'):
        create_head(64, 3, ps=[1.5, 0.5])


@pytest.mark.parametrize('nf, n_out', [(0, 3), (64, 0), (64.0, 3)])
def test_head_sizes_are_validated(nf, n_out):
    with pytest.raises(ValueError, match='must be a positive int'):
        create_head(nf, n_out)


def test_head_flags_do_not_change_layers():
    assert [layer_types(create_head(64, 3, is_multi=m, is_reg=r)) for m, r in
            [(True, False), (False, True)]] == [layer_types(create_head(64, 3))] * 2


def test_head_linear_layers_are_kaiming_normal_with_zero_bias():
    head = create_head(4096, 10)
    lin = head[2]
    assert torch.count_nonzero(lin.bias) == 0
    expected = (2 / 4096) ** 0.5  # kaiming normal, fan_in, gain sqrt(2)
    assert abs(lin.weight.std().item() / expected - 1) < 0.05
    bn = head[0]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_init_kaiming_covers_convs():
    conv = init_kaiming(nn.Sequential(nn.Conv2d(3, 8, 3)))[0]
    assert torch.count_nonzero(conv.bias) == 0


def test_num_features_resnet34_is_512():
    body = get_body(resnet34(), cut=8)
    body.train()
    assert num_features(body) == 512  # so the head's nf is 1024, as in the course
    assert body.training  # training mode restored


def test_num_features_tiny_and_a_body_too_deep_for_64px():
    assert num_features(get_body(TinyNet(), pretrained=False, cut=3)) == 32
    # a 65x65 kernel cannot run on 64x64 inputs: measured again at 224
    assert num_features(nn.Sequential(nn.Conv2d(3, 4, 65))) == 4


def test_num_features_does_not_touch_batchnorm_statistics():
    body = get_body(TinyNet(), pretrained=False, cut=3)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    num_features(body)
    for k, v in body.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_children_and_set_trainable():
    net = TinyNet()
    assert [type(c) for c in children(net)][-2:] == [nn.AdaptiveAvgPool2d, nn.Linear]
    set_trainable(net.block1, False)
    assert net.block1.trainable is False
    assert not any(p.requires_grad for p in net.block1.parameters())
    assert all(p.requires_grad for p in net.block2.parameters())
    set_trainable(net.block1, True)
    assert all(p.requires_grad for p in net.block1.parameters())
    assert isinstance(net.block1[1], bn_types)
