"""The layers a transfer-learning model is assembled from: the concat pool that turns a body's
feature map into a vector, and the fully connected head trained on top of it.

A model is `Sequential(body, pool_flatten(), create_head(nf, c))`. The pool sits outside the head
because body + pool is exactly what precompute caches: the cached rows are the head's input.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ['AdaptiveConcatPool2d', 'Flatten', 'pool_flatten', 'create_head', 'num_features',
           'children', 'set_trainable', 'bn_types', 'is_bn', 'init_kaiming']

# The layers kept in eval mode while their group is frozen (0.7's frozen running statistics).
bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class AdaptiveConcatPool2d(nn.Module):
    """Adaptive max pool and adaptive average pool, concatenated on the channel axis (max first,
    as in fastai), so `C` channels become `2*C`: the head sees both the strongest and the typical
    activation of each feature."""

    def __init__(self, sz: int | tuple[int, int] = 1):
        super().__init__()
        self.sz = sz
        self.mp = nn.AdaptiveMaxPool2d(sz)
        self.ap = nn.AdaptiveAvgPool2d(sz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)

    def extra_repr(self) -> str:
        return f'sz={self.sz}'


# The course's name for torch's own layer: `(N, C, H, W) -> (N, C*H*W)`, the batch axis kept.
Flatten = nn.Flatten


def pool_flatten() -> nn.Sequential:
    """`Sequential(AdaptiveConcatPool2d(), Flatten())`: what sits between body and head."""
    return nn.Sequential(AdaptiveConcatPool2d(), Flatten())


def _head_ps(ps, n_blocks: int, xtra_fc: Sequence[int]) -> list[float]:
    if ps is None:  # fastai 0.7: 0.25 before each hidden layer, 0.5 before the output layer
        return [0.25] * (n_blocks - 1) + [0.5]
    if isinstance(ps, (int, float)):
        ps = [float(ps)] * n_blocks
    ps = [float(p) for p in ps]
    if len(ps) != n_blocks:
        raise ValueError(
            f"ps has {len(ps)} values but xtra_fc={list(xtra_fc)} gives {n_blocks} blocks (one per "
            f"xtra_fc entry plus the output layer); pass a scalar or {n_blocks} dropout "
            f"probabilities")
    bad = [p for p in ps if not 0 <= p < 1]
    if bad:
        raise ValueError(f"ps must be dropout probabilities in [0, 1); got {ps}")
    return ps


def create_head(nf: int, n_out: int, ps: float | Sequence[float] | None = None,
                xtra_fc: Sequence[int] | None = None, is_multi: bool = False,
                is_reg: bool = False) -> nn.Sequential:
    """The course's fully connected head, from the pooled features (`nf` wide) to `n_out` outputs.

        head = create_head(1024, data.c)             # resnet34: 2 x 512 pooled features
        model = nn.Sequential(body, pool_flatten(), head)

    Blocks of BatchNorm1d -> Dropout(p) -> Linear (ReLU between blocks), one per `xtra_fc` entry
    (default `[512]`) plus the output block; `ps` defaults to `[0.25, 0.5]` (0.25 before each hidden
    layer, 0.5 before the output), a scalar uses the same p everywhere. Linear layers are
    Kaiming-normal initialised with zero bias.

    The head returns logits for every task: the loss carries the final activation (cross entropy
    for single-label, BCE-with-logits for multi-label, L1 for regression), which is numerically
    safer than 0.7's LogSoftmax/Sigmoid layer. `predict` applies `log_softmax` for single-label
    models, so the course's `np.exp(log_preds)` still gives probabilities. `is_multi` and `is_reg`
    are accepted for the course's signature and do not change the layers.
    """
    if not isinstance(nf, int) or nf < 1:
        raise ValueError(f"nf must be a positive int (the width of the pooled features); "
                         f"got {nf!r}")
    if not isinstance(n_out, int) or n_out < 1:
        raise ValueError(f"n_out must be a positive int (classes or targets); got {n_out!r}")
    xtra_fc = [512] if xtra_fc is None else [int(n) for n in xtra_fc]
    sizes = [nf, *xtra_fc, n_out]
    ps = _head_ps(ps, len(sizes) - 1, xtra_fc)
    layers: list[nn.Module] = []
    for i, (ni, no, p) in enumerate(zip(sizes[:-1], sizes[1:], ps)):
        layers += [nn.BatchNorm1d(ni), nn.Dropout(p), nn.Linear(ni, no)]
        if i < len(ps) - 1:
            layers.append(nn.ReLU(inplace=True))
    head = nn.Sequential(*layers)
    init_kaiming(head)
    return head


def init_kaiming(module: nn.Module) -> nn.Module:
    """Kaiming-normal weights and zero bias for every Linear and conv layer inside `module`
    (BatchNorm keeps its ones and zeros)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def children(m: nn.Module) -> list[nn.Module]:
    """The direct children of `m`, in order."""
    return list(m.children())


def is_bn(m: nn.Module) -> bool:
    return isinstance(m, bn_types)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Set `requires_grad` on every parameter of `module` (and, as 0.7 did, a `trainable` flag)."""
    module.trainable = trainable  # type: ignore[assignment]  # a plain flag; torch types attributes Tensor | Module
    for p in module.parameters():
        p.requires_grad_(trainable)


def _in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
    return 3


def num_features(module: nn.Module, sz: int = 64) -> int:
    """Channels of the feature map `module` (a body) produces: 512 for a resnet34 body.

    Found by a dummy forward pass of one `sz`x`sz` image (eval mode, no grad, training mode
    restored), because the last BatchNorm in `modules()` order is not always the last one run
    (resnet's downsample, ConvNeXt's LayerNorm). Retries at 224 for bodies too deep for `sz`.
    """
    p = next(module.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device('cpu'), torch.float32)

    def channels(size: int) -> int:
        x = torch.zeros(1, _in_channels(module), size, size, device=device, dtype=dtype)
        return int(module(x).shape[1])

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            if sz < 224:
                try:
                    return channels(sz)
                except RuntimeError:
                    pass  # too small for this body (a feature map shrank below 1 pixel)
            return channels(224)
    finally:
        module.train(was_training)
