"""Fine-tuning a model in use on its mistakes (lesson 3): the images it got wrong, with their
correct labels, mixed with a replay sample of the original training data so it does not forget.

    report = fine_tune_on_mistakes(learn, PATH/'corrected')          # corrected/<class>/*.jpg
    report = fine_tune_on_mistakes(learn, ['a.jpg', 'b.jpg'], ['cats', 'dogs'])
    print(report)   # validation accuracy before -> after, accuracy on the corrected items

    learn = learner_from_export('cats_dogs.pth', data)   # a model in use, exported, and its data
    fine_tune_on_mistakes(learn, PATH/'corrected'); learn.export('cats_dogs_v2.pth')

The original validation accuracy is the guard: if it falls by more than `max_drop` (1 point),
the fine-tuned weights are dropped and the learner keeps the model it had (`report.kept`).
The learner's data, layer groups and freezing are as they were afterwards.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torch import nn

from .conv_learner import ConvLearner
from .dataset import FilesDataset, ImageClassifierData
from .export import Predictor, load_learner
from .sources import list_images
from .metrics import accuracy

__all__ = ['MistakesReport', 'fine_tune_on_mistakes', 'corrected_items', 'learner_from_export']


@dataclass
class MistakesReport:
    """What `fine_tune_on_mistakes` did: accuracies before and after, on the original validation
    set and on the corrected items, and which model the learner kept."""
    val_before: float
    val_after: float
    items_before: float
    items_after: float
    n_items: int
    n_replay: int
    epochs: int
    kept: str  # 'fine-tuned' or 'original'

    def __str__(self) -> str:
        return (f'validation accuracy {self.val_before:.4f} -> {self.val_after:.4f}, corrected '
                f'items {self.items_before:.4f} -> {self.items_after:.4f} ({self.n_items} items '
                f'+ {self.n_replay} replayed, {self.epochs} epochs); kept the {self.kept} model')


def corrected_items(items: Any, labels: Sequence[Any] | None, classes: Sequence[str]
                    ) -> tuple[list[str], np.ndarray]:
    """Absolute file names and class indices of the corrected items: a folder of class
    sub-folders (`corrected/cats/x.jpg`), or a list of files with one label each (a class name
    or index)."""
    if isinstance(items, (str, os.PathLike)):
        root = Path(items)
        if not root.is_dir():
            raise FileNotFoundError(f'fine_tune_on_mistakes: folder {root} not found; pass a folder '
                                    'of class sub-folders or a list of files with labels')
        if labels is not None:
            raise ValueError('fine_tune_on_mistakes: a folder gives its labels by sub-folder; '
                             'leave labels out')
        files, labels = [], []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            names = list_images(sub)[0]
            files += [str(sub / n) for n in names]
            labels += [sub.name] * len(names)
    else:
        files = [str(Path(f).resolve()) for f in items]
        if labels is None or len(labels) != len(files):
            raise ValueError(f'fine_tune_on_mistakes: {len(files)} items need as many labels, got '
                             f'{None if labels is None else len(labels)}')
    if not files:
        raise ValueError(f'fine_tune_on_mistakes: no images in {items}')
    index = {c: i for i, c in enumerate(classes)}
    y = []
    for f, lbl in zip(files, labels):
        if isinstance(lbl, (int, np.integer)) and 0 <= lbl < len(classes):
            y.append(int(lbl))
        elif str(lbl) in index:
            y.append(index[str(lbl)])
        else:
            raise ValueError(f'fine_tune_on_mistakes: label {lbl!r} of {f} is not one of the '
                             f"model's classes {list(classes)}")
    return files, np.array(y, np.int64)


def learner_from_export(model: str | os.PathLike | Predictor, data: Any, **kwargs: Any
                        ) -> ConvLearner:
    """`learn = learner_from_export('model.pth', data)`: a learner on `data` (the original
    training and validation sets) with the weights of an exported model (a file from
    `learn.export` or a `load_learner` result), its head trainable, ready for
    `fine_tune_on_mistakes`. `kwargs` go to `ConvLearner.pretrained` (e.g. `ps=`)."""
    pred = model if isinstance(model, Predictor) else load_learner(model, device='cpu')
    if list(pred.classes) != list(data.classes or []):
        raise ValueError(f'learner_from_export: the model predicts {pred.classes} but the data '
                         f'has classes {data.classes}; pass the data it was trained on')
    head: nn.Module = pred.model.head  # type: ignore[assignment]  # a child: torch types it Tensor | Module
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    learn = ConvLearner.pretrained(pred.arch, data, pretrained=False,
                                   xtra_fc=[m.out_features for m in linears[:-1]], **kwargs)
    learn.model.load_state_dict(pred.model.state_dict())
    if pred.thresholds is not None:
        learn.thresholds = pred.thresholds
    return learn


def _accuracy(learn: Any, ds: Any) -> float:
    preds, y = learn.predict_dl_with_targs(learn.data.get_dl(ds, False))
    return accuracy(preds, y)


def fine_tune_on_mistakes(learn: Any, items: Any, labels: Sequence[Any] | None = None, *,
                          replay: int | None = None, epochs: int = 2, lrs: Any = None,
                          max_drop: float = 0.01, seed: int = 0) -> MistakesReport:
    """Fine-tune `learn` (a trained single-label learner) on `items` with their correct
    `labels` mixed with `replay` randomly drawn training images (default 4 per item, at most
    the whole training set), for `epochs` epochs at `lrs` (default a third of the learner's
    last rates, or 1e-3), training the layer groups that train now (`learn.unfreeze()` first to
    fine-tune the body too). The items go through the training transforms, augmented. Reports
    accuracy before and after; keeps the fine-tuned weights unless the original validation
    accuracy fell by more than `max_drop`."""
    data = learn.data
    if getattr(data, 'is_multi', False) or getattr(data, 'is_reg', False):
        raise ValueError('fine_tune_on_mistakes takes a single-label classifier; this data is '
                         f"{'multi-label' if data.is_multi else 'regression'}")
    if epochs < 1:
        raise ValueError(f'epochs must be at least 1, got {epochs}')
    files, y = corrected_items(items, labels, data.classes)
    trn = data.trn_ds
    items_ds = FilesDataset(files, y, data.val_ds.transform, data.path, c=data.c)
    n_replay = min(len(trn), 4 * len(files) if replay is None else int(replay))
    pick = np.random.default_rng(seed).choice(len(trn), n_replay, replace=False)
    mix = FilesDataset([trn.fnames[i] for i in pick] + files,
                       np.concatenate([trn.y[pick], y]), trn.transform, trn.root, c=data.c)

    val_before, items_before = _accuracy(learn, data.val_ds), _accuracy(learn, items_ds)
    state = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(learn.layer_opt.state_dict()) if learn.layer_opt else None
    if lrs is None:
        lrs = np.array(learn.layer_opt.lrs) / 3 if learn.layer_opt else 1e-3
    mixed = ImageClassifierData(data.path, mix, data.val_ds, bs=min(data.bs, len(mix)),
                                num_workers=data.num_workers, classes=data.classes)
    precompute = getattr(learn, 'precompute', False)
    learn.data = mixed
    try:
        if precompute:  # the cached activations are un-augmented: train on the images
            learn.precompute = False
        torch.manual_seed(seed)
        learn.fit(lrs, epochs)
    finally:
        learn.data = data
        if precompute:
            learn.precompute = True
    val_after, items_after = _accuracy(learn, data.val_ds), _accuracy(learn, items_ds)
    kept = 'fine-tuned'
    if val_after < val_before - max_drop:
        learn.model.load_state_dict(state)
        if opt_state is not None:
            learn.layer_opt.load_state_dict(opt_state)
        kept = 'original'
    return MistakesReport(val_before, val_after, items_before, items_after, len(files), n_replay,
                          epochs, kept)
