"""The demo's first unfrozen epoch on the digits: what each way of handling the body's BatchNorm
does to validation accuracy, epoch by epoch, on the demo's recipe (issue 8).

    .venv/bin/python bench/digits_batchnorm.py [--variants trains frozen ...] [--seeds 42]
                                               [--out /tmp/digits-bn]

Figures, not assertions. Every variant runs the demo's settings (`fastlearn.demo.DEMO`: sz 64,
bs 32, basic augmentation) and phases: lr_find on the cache, `fit(lr, 1)` cached, `fit(lr, 3,
cycle_len=1)` augmented, `unfreeze()`, lr_find over every group (`choose_unfrozen_lrs`, ratio 3),
then 7 unfrozen epochs. One line per run: the accuracy after each epoch, phase by phase.

- trains: what the demo does: statistics train once unfrozen, carried to the digits' at
  `unfreeze()` (batch_norm.py), no gradient clip; SGDR 1 + 2 + 4 at `choose_unfrozen_lrs`'s
  rates (with training statistics, at least `BN_TRAINS_LR_MULT` times the head's lr at the top).
- trains_head_lr, trains_3x, trains_5x: the same with the top rate at 1, 3 or 5 times the
  head's lr (the course's `[lr/9, lr/3, lr]` for 1).
- uncarried, uncarried_5x: statistics train without the carry (what `unfreeze()` did before
  2026-12-06), the top rate at 2 or 5 times the head's lr.
- frozen: `bn_freeze(True)` with the table's clip (the photos' setting); SGDR 1 + 2 + 4.
- frozen_low: frozen, the unfrozen rates a third of lr_find's.
- frozen_onecycle / trains_onecycle: one cycle per SGDR cycle (1, 2, 4 epochs: a warm-up at
  each restart) instead of cosine restarts at the full rate.
- trains_phase2: statistics already train during the augmented head phase (body weights frozen).
- trains_adabn: statistics re-estimated on the training images before unfreezing, then one more
  augmented head epoch on them.
- trains_clip: statistics train, with the table's clip kept.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.conv_learner import (ConvLearner, ImageClassifierData,  # isort: skip
                                    efficientnet_lite0, tfms_from_model, transforms_basic)
from fastlearn.core import set_seed  # isort: skip
from fastlearn.demo import DEMO, choose_lr, choose_unfrozen_lrs, diff_lrs, write_digits  # isort: skip
from fastlearn.guards import BATCH_NORMS  # isort: skip

import torch  # noqa: E402

VARIANTS = ('trains', 'trains_head_lr', 'trains_3x', 'trains_5x', 'uncarried', 'uncarried_5x', 'frozen', 'frozen_low',
            'frozen_onecycle', 'trains_onecycle', 'trains_phase2', 'trains_adabn', 'trains_clip')


def _body_norms(learn: ConvLearner) -> list[torch.nn.Module]:
    return [m for g in learn.layer_groups[:-1] for m in g.modules() if isinstance(m, BATCH_NORMS)]


def _reestimate(learn: ConvLearner) -> None:
    """The body's BatchNorm statistics averaged over one pass of the training images."""
    learn.model.eval()
    norms = _body_norms(learn)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
        m.train()
    with torch.no_grad():
        for x, _ in learn.data.trn_dl:
            learn.model(x.to(learn.device))
    for m in norms:
        m.momentum = 0.1


def run(variant: str, seed: int, out: Path) -> list[tuple[str, list[float]]]:
    set_seed(seed)
    path = write_digits(out / 'digits')
    tfms = tfms_from_model(efficientnet_lite0, DEMO['sz'], aug_tfms=transforms_basic, max_zoom=1.1)
    data = ImageClassifierData.from_paths(path, bs=DEMO['bs'], tfms=tfms, num_workers=0)
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True, quiet=True,
                                   tmp_name=str(out / 'tmp'), models_name=str(out / 'models'))
    frozen = variant.startswith('frozen')
    learn.bn_freeze(frozen)
    if not frozen and variant != 'trains_clip':
        learn.clip = None
    accs = lambda: [round(100 * float(m[1]), 1) for m in learn.sched.epoch_metrics]  # noqa: E731
    lr, _ = choose_lr(learn)
    learn.fit(lr, 1)
    phases = [('cached head', accs())]
    learn.precompute = False
    if variant == 'trains_phase2':  # the body's statistics move, its weights do not
        train_mode = learn._train_mode
        learn._train_mode = lambda model: (train_mode(model), [m.train() for m in _body_norms(learn)])
    learn.fit(lr, DEMO['epochs'], cycle_len=1)
    phases.append(('augmented head', accs()))
    if variant == 'trains_phase2':
        del learn._train_mode
    if variant == 'trains_adabn':
        _reestimate(learn)
        learn.fit(lr, 1, cycle_len=1)
        phases.append(('head on re-estimated statistics', accs()))
    if variant.startswith('uncarried'):
        learn._carry_batch_norm = lambda groups: None  # type: ignore[method-assign]
    learn.unfreeze()
    lrs, _ = choose_unfrozen_lrs(learn, lr, DEMO['lr_ratio'])
    if variant == 'frozen_low':
        lrs = lrs / 3
    mults = {'trains_head_lr': 1, 'trains_3x': 3, 'trains_5x': 5, 'uncarried': 2, 'uncarried_5x': 5}
    if variant in mults:
        mult = mults[variant]
        lrs = diff_lrs(mult * lr, len(lrs), DEMO['lr_ratio'])
    unfrozen: list[float] = []
    if variant.endswith('onecycle'):
        for n in (1, 2, 4):
            learn.fit_one_cycle(n, lrs)
            unfrozen += accs()
    else:
        learn.fit(lrs, 3, cycle_len=1, cycle_mult=2)
        unfrozen = accs()
    return phases + [(f'unfrozen at {", ".join(f"{x:.2g}" for x in lrs)}', unfrozen)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument('--seeds', nargs='+', type=int, default=[42])
    ap.add_argument('--out', type=Path, default=Path('/tmp/digits-bn'))
    args = ap.parse_args()
    warnings.filterwarnings('ignore', message='precompute')
    for seed in args.seeds:
        for v in args.variants:
            start = time.perf_counter()
            phases = run(v, seed, args.out)
            print(f'{v:16s} seed {seed}: ' + ' | '.join(f'{name}: {" ".join(map(str, a))}'
                                                        for name, a in phases)
                  + f'  ({time.perf_counter() - start:.0f} s)', flush=True)


if __name__ == '__main__':
    main()
