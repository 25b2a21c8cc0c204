"""Fine-tuning recipes side by side: validation accuracy after each phase, per data set, size and seed.

    .venv/bin/python bench/recipes.py [--data dogscats digits] [--sz 128 224] [--seeds 0 1 2]
                                      [--recipes course train fine_tune] [--out /tmp/recipes]

Figures, not assertions (issue: "the final model is never worse than after the first head phase").
Each line is one run of one recipe with EfficientNet-Lite0 and its offline weights:

- course: the lesson-1 calls as taught, with the course's rates and nothing else:
  `fit(1e-2, 1)` on the cache; `precompute = False`; `fit(1e-2, 1, cycle_len=1)`; `unfreeze()`;
  `fit(np.array([1e-4, 1e-3, 1e-2]), 2, cycle_len=1, cycle_mult=2)`; `TTA()`.
- train: `fastlearn train` with its defaults (`run_recipe`, which keeps the best epoch); on the
  digits with the demo's settings (`fastlearn demo`).
- fine_tune: `learn.fine_tune(3, 1e-2)` (one cycle on the head, then three on every group; the best
  epoch of both kept).

The photos use the architecture table's BatchNorm setting (frozen statistics, a gradient clip);
`--photos-train-stats` gives them the digits' (statistics that train, no clip). `--warm-up` runs the
course's two SGDR fits with `warm_up=True`, fastai 0.7's default (fastlearn's is off).
`--body-rates 0.3` runs the course's unfrozen fit at `[3e-5, 3e-4, 1e-2]` (measured, not adopted);
`--unfrozen-wd 5e-4` gives that fit weight decay (the course's has none). `--wrong` lists the
validation images the TTA prediction gets wrong, with the probability given to the true class by TTA
and by the plain prediction.

The digits are scikit-learn's, written once under --out (the same folder `fastlearn demo` writes).
A run at sz 128 takes 2-4 minutes on 2 idle cores; 224 about three times that.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, accuracy,  # isort: skip
                                    efficientnet_lite0, tfms_from_model, transforms_basic,
                                    transforms_side_on)
from fastlearn.core import set_seed  # isort: skip
from fastlearn.demo import DEMO, run_recipe, write_digits  # isort: skip

import numpy as np  # noqa: E402

DOGSCATS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
# The command line's variations on the recipes (main() fills it from the flags of the same names).
OPTIONS: dict = {'photos_train_stats': False,  # the photos with the digits' BatchNorm setting
                 'warm_up': False,             # the course's SGDR fits with fastai 0.7's warm-up
                 'body_rates': 1.0,            # the course's two unfrozen body rates times this
                 'unfrozen_wd': None,          # weight decay in the course's unfrozen fit
                 'wrong': False}               # list the images TTA gets wrong


def _data(path: Path, sz: int, digits: bool) -> ImageClassifierData:
    aug = transforms_basic if digits else transforms_side_on
    return ImageClassifierData.from_paths(path, bs=32, num_workers=0 if digits else None,
                                          tfms=tfms_from_model(efficientnet_lite0, sz, aug_tfms=aug,
                                                               max_zoom=1.1))


def _learner(data: ImageClassifierData, out: Path, digits: bool) -> ConvLearner:
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True, quiet=True,
                                   tmp_name=str(out / 'tmp'), models_name=str(out / 'models'))
    if digits or OPTIONS['photos_train_stats']:  # what `fastlearn demo` does for data far from ImageNet
        learn.bn_freeze(DEMO['bn_freeze'])
        learn.clip = None
    return learn


def _tta(learn: ConvLearner) -> float:
    log_preds, y = learn.TTA()
    probs = np.mean(np.exp(log_preds), 0)
    if OPTIONS['wrong']:
        plain = np.exp(learn.predict())
        for i in np.flatnonzero(probs.argmax(1) != y):
            print(f'  wrong with TTA: {learn.data.val_ds.fnames[i]}  p(true class) TTA {probs[i, y[i]]:.3f}, '
                  f'plain {plain[i, y[i]]:.3f}', flush=True)
    return accuracy(probs, y)


def course(path: Path, sz: int, out: Path, digits: bool, seed: int) -> list[tuple[str, float]]:
    learn = _learner(_data(path, sz, digits), out, digits)
    phases = [('cache', learn.fit(1e-2, 1)[1])]
    learn.precompute = False
    phases.append(('augmented', learn.fit(1e-2, 1, cycle_len=1, warm_up=OPTIONS['warm_up'])[1]))
    learn.unfreeze()
    accs: list[float] = []

    class Epochs:
        def on_epoch_end(self, state, metrics):
            accs.append(metrics[1])
    body = OPTIONS['body_rates']
    learn.fit(np.array([1e-4 * body, 1e-3 * body, 1e-2]), 2, OPTIONS['unfrozen_wd'], cycle_len=1,
              cycle_mult=2, callbacks=[Epochs()], warm_up=OPTIONS['warm_up'])
    phases += [(f'unfrozen {i}', a) for i, a in enumerate(accs)]
    return phases + [('TTA', _tta(learn))]


def fine_tune(path: Path, sz: int, out: Path, digits: bool, seed: int) -> list[tuple[str, float]]:
    learn = _learner(_data(path, sz, digits), out, digits)
    learn.precompute = False
    accs: list[float] = []

    class Epochs:
        def on_epoch_end(self, state, metrics):
            accs.append(metrics[1])
    kept = learn.fine_tune(3, 1e-2, callbacks=[Epochs()])[1]
    return [('head', accs[0])] + [(f'unfrozen {i}', a) for i, a in enumerate(accs[1:])] + \
        [('kept', kept), ('TTA', _tta(learn))]


def train(path: Path, sz: int, out: Path, digits: bool, seed: int) -> list[tuple[str, float]]:
    settings: dict = {k: DEMO[k] for k in ('aug', 'lr_ratio', 'workers', 'bn_freeze')} if digits else {}
    if OPTIONS['photos_train_stats'] and not digits:
        settings['bn_freeze'] = False
    r = run_recipe(path, 'efficientnet_lite0', out / 'train', sz=sz, quiet=True, seed=seed, **settings)
    short = {'head, precomputed': 'cache', 'head, augmented': 'augmented', 'all layers': 'unfrozen'}
    return [(f'{short[p]} {e}', a) for p, e, a in r.history] + [('kept', r.accuracy),
                                                                 ('TTA', r.accuracy_tta)]


RECIPES = {'course': course, 'train': train, 'fine_tune': fine_tune}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', nargs='+', default=['dogscats', 'digits'], choices=['dogscats', 'digits'])
    ap.add_argument('--sz', nargs='+', type=int, default=[128, 224])
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--recipes', nargs='+', default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument('--out', type=Path, default=Path('/tmp/fastlearn-recipes'))
    ap.add_argument('--photos-train-stats', action='store_true',
                    help="the photos too with the body's BatchNorm statistics training once unfrozen "
                         '(carried to the data\'s at unfreeze) and no gradient clip, as the digits')
    ap.add_argument('--warm-up', action='store_true',
                    help="the course's SGDR fits with warm_up=True (fastai 0.7's first 5 %% of the first "
                         'cycle at lr/100)')
    ap.add_argument('--body-rates', type=float, default=1.0,
                    help="multiply the course's unfrozen body rates (1e-4, 1e-3) by this; the head's "
                         "stays 1e-2 (bench/README.md, \"The body's rates\")")
    ap.add_argument('--unfrozen-wd', type=float, default=None,
                    help="weight decay (L2, every group) in the course's unfrozen fit; the course has none")
    ap.add_argument('--wrong', action='store_true',
                    help='list the validation images the TTA prediction gets wrong (course, fine_tune)')
    args = ap.parse_args()
    OPTIONS.update({k: getattr(args, k) for k in OPTIONS})
    warnings.simplefilter('ignore')
    for name in args.data:
        digits = name == 'digits'
        path = write_digits(args.out / 'digits') if digits else DOGSCATS
        for sz in args.sz:
            for recipe in args.recipes:
                for seed in args.seeds:
                    set_seed(seed)
                    start = time.perf_counter()
                    phases = RECIPES[recipe](path, sz, args.out / f'{name}-{sz}-{recipe}-{seed}', digits, seed)
                    first, final = phases[0][1], phases[-1][1]
                    verdict = 'ok' if final >= first else 'WORSE than the first head phase'
                    print(f'{name:<8} sz {sz:<3} {recipe:<9} seed {seed}: '
                          + '  '.join(f'{p} {a:.4f}' for p, a in phases)
                          + f'  | {time.perf_counter() - start:.0f} s, {verdict}', flush=True)


if __name__ == '__main__':
    main()
