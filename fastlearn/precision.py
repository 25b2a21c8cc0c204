"""Mixed precision: what `learn.to_fp16()`, `learn.to_bf16()` and `learn.to_fp32()` set.

    learn.to_fp16()     # CUDA: float16 autocast, gradients scaled so small ones survive
    learn.to_bf16()     # CUDA or CPU: bfloat16 autocast (float32's range: no scaler needed)
    learn.to_fp32()     # back to float32 everywhere

Only the computation changes: weights, optimizer state, saved models, exports and precomputed
activations stay float32 (autocast runs each operation in the lower precision where that is
safe and keeps the parameters as they are).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import ContextManager

import torch

from .core import user_stacklevel

__all__ = ['Precision', 'FP32', 'mixed_precision']


class Precision:
    """An autocast dtype (None: float32) and, for float16 on CUDA, a gradient scaler that lives
    as long as the setting, so its scale carries over from one fit to the next."""

    def __init__(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        self.dtype = dtype
        self.scaler = (torch.amp.GradScaler('cuda')
                       if dtype == torch.float16 and device is not None and device.type == 'cuda' else None)

    @property
    def name(self) -> str:
        return 'float32' if self.dtype is None else str(self.dtype).replace('torch.', '')

    def autocast(self, device: torch.device) -> ContextManager:
        """The context a forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer,
                      before_step: Callable[[], None]) -> None:
        """Backward, then `before_step()` (gradient clipping, on true-scale gradients), then the
        optimizer step; with a scaler, a step whose gradients overflowed is skipped and the
        scale lowered."""
        if self.scaler is None:
            loss.backward()
            before_step()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        before_step()
        self.scaler.step(opt)
        self.scaler.update()

    def key(self) -> str:
        """What the precompute cache key adds: nothing for float32 (keys stay as they were)."""
        return '' if self.dtype is None else f'autocast {self.name}'

    def describe(self) -> str | None:
        """The learner's repr line, or None for float32."""
        if self.dtype is None:
            return None
        scaler = ', gradients scaled' if self.scaler is not None else ''
        return f'  mixed precision: {self.name} autocast{scaler}; weights float32'

    def __repr__(self) -> str:
        return f'Precision({self.name})'


FP32 = Precision()


def mixed_precision(kind: str, device: torch.device) -> Precision:
    """The `Precision` for 'fp16', 'bf16' or 'fp32' on `device`. float16 needs CUDA: elsewhere
    (the CPU, MPS) a warning, and float32."""
    if kind == 'fp32':
        return FP32
    if kind == 'bf16':
        if device.type not in ('cuda', 'cpu'):
            raise ValueError(f'bfloat16 autocast runs on CUDA or the CPU, not {device.type}; use '
                             'learn.to_fp32() there')
        if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise ValueError(f'{torch.cuda.get_device_name(device)} has no bfloat16 support; use '
                             'learn.to_fp16() on this GPU')
        return Precision(torch.bfloat16, device)
    if kind == 'fp16':
        if device.type != 'cuda':
            warnings.warn(f'to_fp16(): float16 mixed precision needs a CUDA GPU and this learner is '
                          f'on {device.type}, so it trains in float32; learn.to_bf16() is the '
                          "CPU's mixed precision (docs/distributed.md says when it pays)",
                          stacklevel=user_stacklevel())
            return FP32
        return Precision(torch.float16, device)
    raise ValueError(f"precision is 'fp16', 'bf16' or 'fp32', got {kind!r}")

