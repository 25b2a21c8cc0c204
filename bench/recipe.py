"""The lesson-1 recipe, stage by stage: validation accuracy and seconds after each stage.

    .venv/bin/python bench/recipe.py [--data ../shared/data/dogscats] [--sz 224] [--bs 32]
                                     [--head-cycles 3] [--unfrozen-cycles 3] [--seed 0]

The course's full recipe (tests/test_recipe.py runs a shortened one at sz 128 and asserts on it),
here at any size and as figures:
EfficientNet-Lite0 with its offline ImageNet weights, the course's transforms (side-on, max_zoom
1.1), the cache and saved weights in a temp folder (the photos' folder is never written).

    learn = ConvLearner.pretrained(arch, data, precompute=True)
    learn.lr_find()                                  # lr_find's suggestion is printed
    learn.fit(3e-3, 1)                               # head on cached activations
    learn.precompute = False
    learn.fit(3e-3, 3, cycle_len=1)                  # head, augmented images
    learn.save(...); learn.load(...)
    learn.unfreeze(); learn.bn_freeze(True)
    learn.fit(np.array([3e-5, 3e-4, 3e-3]), 3, cycle_len=1, cycle_mult=2)   # 7 epochs
    log_preds, y = learn.TTA()

The rates (the course's rule `[lr/100, lr/10, lr]` with lr = 3e-3) and `bn_freeze(True)` are
explained in tests/test_recipe.py. A full run at sz 224 takes about 15 minutes on 2 idle cores
(bench/README.md has the figures).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, accuracy,  # isort: skip
                                    efficientnet_lite0, tfms_from_model, transforms_side_on)
from fastlearn.core import set_seed  # isort: skip

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA, help='folder with train/ and valid/')
    ap.add_argument('--sz', type=int, default=224)
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--lr', type=float, default=3e-3, help='the head rate (precomputed and augmented)')
    ap.add_argument('--lrs', type=float, nargs=3, default=None,
                    help='unfrozen rates per layer group (default lr/100, lr/10, lr)')
    ap.add_argument('--head-cycles', type=int, default=3)
    ap.add_argument('--unfrozen-cycles', type=int, default=3)
    ap.add_argument('--no-bn-freeze', action='store_true')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter('ignore')
    set_seed(args.seed)
    print(f"{args.data} sz {args.sz} bs {args.bs} seed {args.seed} | torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads | OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '-')} | {time.strftime('%Y-%m-%d %H:%M')} "
          f"load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix='bench_recipe_') as tmp:
        run(args, Path(tmp))


def per_epoch(learn: ConvLearner) -> str:
    return ', '.join(f'{m[1]:.4f}' for m in learn.sched.epoch_metrics)


def run(args, tmp: Path) -> None:
    start = lap = time.perf_counter()

    def stage(name: str, acc: float | None = None) -> None:
        nonlocal lap
        now = time.perf_counter()
        shown = f'{acc:.4f}' if acc is not None else '      '
        print(f'{name:<48} accuracy {shown}  {now - lap:7.1f} s  load {os.getloadavg()[0]:.1f}',
              flush=True)
        lap = now

    arch = efficientnet_lite0
    tfms = tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(args.data, bs=args.bs, tfms=tfms)
    learn = ConvLearner.pretrained(arch, data, precompute=True, tmp_name=str(tmp / 'tmp'),
                                   models_name=str(tmp / 'models'), quiet=True)
    learn.activations('trn')
    learn.activations('val')
    stage('build the learner, fill the cache')
    learn.lr_find()
    stage(f'lr_find (suggests {learn.sched.suggest_lr():.2g})')
    stage(f'precompute: fit({args.lr:g}, 1)', learn.fit(args.lr, 1)[1])
    learn.precompute = False
    learn.fit(args.lr, args.head_cycles, cycle_len=1)
    stage(f'augmented head: fit({args.lr:g}, {args.head_cycles}, cycle_len=1) [{per_epoch(learn)}]',
          learn.sched.epoch_metrics[-1][1])
    learn.save(f'{args.sz}_lastlayer')
    learn.load(f'{args.sz}_lastlayer')
    learn.unfreeze()
    learn.bn_freeze(not args.no_bn_freeze)
    lrs = np.array(args.lrs or [args.lr / 100, args.lr / 10, args.lr])
    n = args.unfrozen_cycles
    learn.fit(lrs, n, cycle_len=1, cycle_mult=2)
    shown = ', '.join(f'{v:g}' for v in lrs)
    stage(f'unfrozen: fit([{shown}], {n}, cycle_len=1, cycle_mult=2) [{per_epoch(learn)}]',
          learn.sched.epoch_metrics[-1][1])
    log_preds, y = learn.TTA()
    stage('TTA (plain prediction, then 4 augmented)', accuracy(np.mean(np.exp(log_preds), 0), y))
    print(f'total {time.perf_counter() - start:.0f} s', flush=True)


if __name__ == '__main__':
    main()
