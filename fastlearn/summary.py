"""`learn.summary()`: the course's layer-by-layer summary, as a text table.

    learn.summary()                   # shows the table in a notebook
    learn.summary()['Conv2d-1']['output_shape']    # [-1, 64, 112, 112], as fastai 0.7's dict

Each leaf layer gets its output shape (from one forward pass in eval mode), its parameter count,
its layer group, and whether it trains; the footer totals parameters per layer group.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ['ModelSummary', 'model_summary']


def _shape(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return [-1, *x.shape[1:]]
    if isinstance(x, (list, tuple)):
        return [_shape(o) for o in x]
    return None


class ModelSummary(OrderedDict):
    """fastai 0.7's summary dict (`'Conv2d-1' -> {input_shape, output_shape, trainable,
    nb_params, group}`) whose repr is a table, so a notebook cell shows it as text."""

    def __init__(self, rows: Any = (), group_stats: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__(rows)
        self.group_stats = list(group_stats)  # (params, trainable params) per layer group

    def table(self) -> str:
        head = f"{'Layer (type)':<24} {'Group':>5} {'Output shape':<24} {'Params':>12}  Trainable"
        lines = [head, '=' * len(head)]
        for name, r in self.items():
            group = '-' if r['group'] is None else str(r['group'])
            train = {True: 'yes', False: 'no', None: '-'}[r['trainable']]
            lines.append(f"{name:<24} {group:>5} {str(r['output_shape']):<24} "
                         f"{r['nb_params']:>12,}  {train}")
        lines.append('=' * len(head))
        total = sum(r['nb_params'] for r in self.values())
        trainable = sum(r['nb_params'] for r in self.values() if r['trainable'])
        for i, (n, t) in enumerate(self.group_stats):
            state = 'trainable' if t == n and n else 'frozen' if not t else 'partly trainable'
            lines.append(f'Layer group {i}: {n:,} params, {state}')
        lines += [f'Total params: {total:,}', f'Trainable params: {trainable:,}',
                  f'Frozen params: {total - trainable:,}']
        return '\n'.join(lines)

    def __repr__(self) -> str:
        return self.table()

    __str__ = __repr__


def model_summary(model: nn.Module, x: torch.Tensor,
                  layer_groups: Sequence[nn.Module] | None = None) -> ModelSummary:
    """`model_summary(m, torch.zeros(1, 3, 224, 224), learn.layer_groups)`: one forward pass of
    `x` (in eval mode, without gradients; the model's mode is put back) recording each leaf
    layer. Layers reached twice in one pass get one row per call."""
    groups = list(layer_groups or [])
    group_of = {id(m): i for i, g in enumerate(groups) for m in g.modules()}
    rows: list[tuple[str, dict]] = []
    counts: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        kind = type(module).__name__
        counts[kind] = counts.get(kind, 0) + 1
        params = list(module.parameters())
        rows.append((f'{kind}-{counts[kind]}', {
            'input_shape': _shape(inputs[0]) if inputs else None,
            'output_shape': _shape(output),
            'trainable': any(p.requires_grad for p in params) if params else None,
            'nb_params': sum(p.numel() for p in params),
            'group': group_of.get(id(module))}))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = [m.training for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, t in zip(model.modules(), was_training):
            m.training = t
    stats = [(sum(p.numel() for p in g.parameters()),
              sum(p.numel() for p in g.parameters() if p.requires_grad)) for g in groups]
    return ModelSummary(rows, stats)
