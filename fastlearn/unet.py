"""A dynamic U-Net on any body of the architecture table: the encoder is the body as
`ConvLearner.pretrained` cuts it, its feature maps taken with forward hooks on the last child at
each resolution, and a decoder of upsampling blocks that joins each of them on the way back up.

    model = DynamicUnet(get_body(efficientnet_lite0), n_classes=12)
    model(torch.randn(2, 3, 180, 240)).shape     # (2, 12, 180, 240): output at the input size
    model.skip_names                             # ['block0', 'block1', 'block2', 'block4']
    groups = unet_groups(model, efficientnet_lite0)   # encoder early · encoder late · decoder

Sizes need not divide by 32: each upsampling goes to the size of the skip it joins (180x240
gives 6x8 at stride 32 and 12x15 at stride 16), so the output is always the input's size.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .archs import arch_for, get_body, layer_groups

__all__ = ['DynamicUnet', 'UnetBlock', 'skip_layers', 'unet_groups', 'build_unet']

# A probe of this size finds where the encoder halves its resolution; 64 keeps stride 32 at 2x2.
_PROBE = 64


def conv_bn_relu(ni: int, nf: int, ks: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks // 2, bias=False), nn.BatchNorm2d(nf),
                         nn.ReLU(inplace=True))


@torch.no_grad()
def skip_layers(encoder: nn.Sequential, probe: int = _PROBE) -> tuple[list[int], list[int], int]:
    """`(indices, channels, out_channels)`: the children of `encoder` whose output is the last at
    its resolution (the next child shrinks it), their channels, and the encoder's output
    channels, found by running a `probe`x`probe` image through it in eval mode (so BatchNorm
    statistics stay as they were)."""
    was_training = encoder.training
    encoder.eval()
    try:
        param = next(encoder.parameters(), None)
        x = torch.zeros(1, 3, probe, probe, device=param.device if param is not None else 'cpu')
        shapes = []
        for child in encoder:
            x = child(x)
            shapes.append(tuple(x.shape[1:]))
    finally:
        encoder.train(was_training)
    if any(len(s) != 3 for s in shapes):
        raise ValueError('a U-Net needs an encoder whose children all give (N, C, H, W) feature '
                         f'maps; got output shapes {shapes}')
    idxs = [i for i in range(len(shapes) - 1) if shapes[i + 1][1:] < shapes[i][1:]]
    if not idxs:
        raise ValueError(f'the encoder ({len(encoder)} children) never changes resolution between '
                         'its children, so there is nothing to join the decoder to; a U-Net needs '
                         'a body cut into stages (e.g. the table\'s efficientnet_lite0, resnet34)')
    return idxs, [shapes[i][0] for i in idxs], shapes[-1][0]


class UnetBlock(nn.Module):
    """Upsample `up` to the size of `skip`, join the (normalised) skip, two 3x3 convolutions.
    The 1x1 convolution halves `up`'s channels first, at the low resolution, where it is cheap."""

    def __init__(self, up_in: int, skip_in: int, nf: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(up_in, up_in // 2, ks=1)
        self.bn = nn.BatchNorm2d(skip_in)
        self.conv = nn.Sequential(conv_bn_relu(up_in // 2 + skip_in, nf), conv_bn_relu(nf, nf))

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.reduce(up), size=skip.shape[-2:], mode='bilinear',
                           align_corners=False)
        return self.conv(torch.cat([up, self.bn(skip)], 1))


def _keep(store: dict[int, torch.Tensor], i: int, module: nn.Module, inp: Any,
          out: torch.Tensor) -> None:
    store[i] = out


class DynamicUnet(nn.Module):
    """`encoder` (a body: an `nn.Sequential`) and a decoder for `n_classes` per-pixel outputs.

    - `middle`: two convolutions on the encoder's output (stride 32 for most bodies);
    - `blocks`: one `UnetBlock` per skip, deepest first, each `nf = clamp(2 * skip channels,
      32, 256)` wide;
    - `final`: up to the input size, joined with the input image, a convolution and a 1x1 to
      the classes.
    """

    def __init__(self, encoder: nn.Sequential, n_classes: int, *, probe: int = _PROBE) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Sequential):
            raise TypeError(f'encoder must be an nn.Sequential body (get_body(arch)); got '
                            f'{type(encoder).__name__}')
        self.encoder = encoder
        self.skip_idxs, skip_chans, ni = skip_layers(encoder, probe)
        names = [n for n, _ in encoder.named_children()]
        self.skip_names = [names[i] for i in self.skip_idxs]
        mid = min(ni, 512)
        self.middle = nn.Sequential(conv_bn_relu(ni, mid, ks=1), conv_bn_relu(mid, mid))
        blocks, up = [], mid
        for c in reversed(skip_chans):
            nf = max(32, min(256, 2 * c))
            blocks.append(UnetBlock(up, c, nf))
            up = nf
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Sequential(conv_bn_relu(up // 2 + 3, 16), nn.Conv2d(16, n_classes, 1))
        self.final_reduce = conv_bn_relu(up, up // 2, ks=1)
        self.n_classes = int(n_classes)

    @property
    def decoder(self) -> nn.ModuleList:
        """Everything that is not the encoder: the decoder's layer group."""
        return nn.ModuleList([self.middle, self.blocks, self.final_reduce, self.final])

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder's output and its hooked feature maps, shallowest first."""
        store: dict[int, torch.Tensor] = {}
        handles = [self.encoder[i].register_forward_hook(partial(_keep, store, i))
                   for i in self.skip_idxs]
        try:  # hooks live for one call only: copies of the model never share them
            out = self.encoder(x)
        finally:
            for h in handles:
                h.remove()
        return out, [store[i] for i in self.skip_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, skips = self.features(x)
        out = self.middle(out)
        for block, skip in zip(self.blocks, reversed(skips)):
            out = block(out, skip)
        out = F.interpolate(self.final_reduce(out), size=x.shape[-2:], mode='bilinear',
                            align_corners=False)
        return self.final(torch.cat([out, x], 1))


def unet_groups(model: DynamicUnet, arch: Any = None) -> list[nn.Module]:
    """`[encoder early, encoder late, decoder]` split where the table splits the body (stride
    16), or `[encoder, decoder]` for a body without a split."""
    return layer_groups(model.encoder, model.decoder, arch)


def build_unet(arch: Any, n_classes: int, *, pretrained: bool = True, weights: Any = None
               ) -> DynamicUnet:
    """`build_unet(efficientnet_lite0, 12)`: the table's body (pretrained) under a new decoder."""
    return DynamicUnet(get_body(arch_for(arch), pretrained=pretrained, weights=weights), n_classes)
