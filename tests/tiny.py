"""A tiny CNN registered as the architecture 'tiny', so the whole suite can build learners in
milliseconds: three conv blocks (stride 2, 2, 1) then average pool and a 10-class linear layer.

Body = block1, block2, block3 (cut=3); groups [block1] · [block2, block3] · head (split=1);
num_features = 32, so nf = 64. Its "pretrained" weights are a state dict in a temp file
(the `tiny_weights` fixture); the `tiny_arch` fixture's row points at that file.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from fastlearn.archs import Arch

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def conv_block(ni: int, nf: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(nf), nn.ReLU(inplace=True))


class TinyNet(nn.Module):
    """conv(3->8, s2) · conv(8->16, s2) · conv(16->32) · avg pool · Linear(32->n_out)."""

    def __init__(self, n_out: int = 10):
        super().__init__()
        self.block1 = conv_block(3, 8, 2)
        self.block2 = conv_block(8, 16, 2)
        self.block3 = conv_block(16, 32, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.pool(x).flatten(1))


TINY = Arch('tiny', TinyNet, cut=3, split=1, stats=IMAGENET_STATS)
TINY_NF = 32  # channels out of the body; the concat pool makes the head's input 64 wide


def save_tiny_weights(path: Path, seed: int = 42) -> Path:
    """Write a TinyNet state dict made with a fixed seed, with non-trivial BatchNorm statistics
    (so a body that ignored them would give different outputs)."""
    gen = torch.Generator().manual_seed(seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = TinyNet()
    finally:
        torch.random.set_rng_state(state)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def tiny_arch_with(weights: Path) -> Arch:
    """`TINY` whose pretrained weights are the file `weights`."""
    return dataclasses.replace(TINY, weights=str(weights))
