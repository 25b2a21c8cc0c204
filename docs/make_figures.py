"""Draw the figures under docs/figures/ from real runs of the library (none is drawn by hand).

    .venv/bin/python docs/make_figures.py            # both parts
    .venv/bin/python docs/make_figures.py sgdr       # learning-rate schedules: seconds, no data
    .venv/bin/python docs/make_figures.py recipe     # lesson 1 on the photos: minutes

`sgdr`: a small `Learner` on generated feature vectors is fitted the ways docs/sgdr.md describes;
each picture is that fit's own `learn.sched.plot_lr()`.

`recipe`: the course's recipe (1 epoch on precomputed activations, 3 cycles with augmentation,
3 cycles of all layers with cycle_mult=2, TTA: the course's calls and rates, nothing else) with efficientnet_lite0
at 128 px on the photos in
../shared/data/dogscats (or --data). It writes the plots docs/recipe.md shows and the numbers it
quotes (figures/recipe_run.json). Nothing is written into the data folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

DOCS = Path(__file__).resolve().parent
FIGURES = DOCS / 'figures'
DOGSCATS = DOCS.parents[1] / 'shared' / 'data' / 'dogscats'
DPI = 80


def save(fig, name: str, title: str | None = None, *, photos: bool = False) -> str:
    """Write `figures/<name>.png` small (dpi 80; `photos`: reduced to a 256-colour palette, which
    keeps a grid of photos under 150 KB), close the figure, return the file name."""
    if title:
        fig.axes[0].set_title(title)
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / f'{name}.png'
    fig.savefig(path, dpi=DPI, bbox_inches='tight')
    plt.close(fig)
    if photos:
        from PIL import Image
        with Image.open(path) as im:
            small = im.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    kb = path.stat().st_size / 1024
    print(f'  {path.relative_to(DOCS)}  {kb:.0f} KB' + ('  (over 150 KB!)' if kb > 150 else ''))
    return path.name


# ---------------------------------------------------------------------------- SGDR schedules

def schedule_learner(n_groups: int, n: int = 800, bs: int = 16):
    """A `Learner` of `n_groups` layer groups (1: one group; 3: two hidden layers and the output
    layer) on two separable classes of 16-number vectors: 40 batches an epoch, a fit in seconds."""
    from fastlearn.conv_learner import ImageClassifierData, Learner
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 16)) + y[:, None]).astype(np.float32)
    data = ImageClassifierData.from_arrays(tempfile.gettempdir(), (x[:640], y[:640]), (x[640:], y[640:]),
                                           bs=bs, num_workers=0)
    layers = [nn.Sequential(nn.Linear(16, 32), nn.ReLU()), nn.Sequential(nn.Linear(32, 32), nn.ReLU()),
              nn.Linear(32, 2)]
    model = nn.Sequential(*layers)
    return Learner(data, model, layers if n_groups == 3 else [model], quiet=True)


def sgdr_figures() -> None:
    print('SGDR schedules (learn.sched.plot_lr() after each fit; 40 batches an epoch):')
    cases = [
        ('sgdr_constant', 'fit(1e-2, 3): constant', dict(lrs=1e-2, n_cycle=3)),
        ('sgdr_cycle_len', 'fit(1e-2, 3, cycle_len=1)', dict(lrs=1e-2, n_cycle=3, cycle_len=1)),
        ('sgdr_cycle_len2', 'fit(1e-2, 1, cycle_len=3)', dict(lrs=1e-2, n_cycle=1, cycle_len=3)),
        ('sgdr_cycle_mult', 'fit(1e-2, 3, cycle_len=1, cycle_mult=2)',
         dict(lrs=1e-2, n_cycle=3, cycle_len=1, cycle_mult=2)),
        ('sgdr_differential', 'fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1, cycle_mult=2)',
         dict(lrs=np.array([1e-4, 1e-3, 1e-2]), n_cycle=3, cycle_len=1, cycle_mult=2)),
        ('sgdr_warm_up', 'fit(1e-2, 3, cycle_len=1, warm_up=True)',
         dict(lrs=1e-2, n_cycle=3, cycle_len=1, warm_up=True)),
    ]
    for name, title, kw in cases:
        learn = schedule_learner(3 if name == 'sgdr_differential' else 1)
        learn.fit(kw.pop('lrs'), kw.pop('n_cycle'), **kw)
        fig = learn.sched.plot_lr()
        fig.set_size_inches(6, 3)
        save(fig, name, title)


# ---------------------------------------------------------------------------- the recipe

def _epochs(sched) -> list[dict]:
    return [{'val_loss': round(m[0], 4), 'accuracy': round(m[1], 4)} for m in sched.epoch_metrics]


def recipe_figures(path: Path, sz: int, bs: int, n_cycle: int, lr: float, bn_freeze: bool) -> None:
    from sklearn.metrics import confusion_matrix

    from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, accuracy, efficientnet_lite0,
                                        tfms_from_model, transforms_side_on)
    from fastlearn.core import set_seed
    from fastlearn.plots import ImageModelResults, plot_confusion_matrix, plots, plots_from_files
    if not (path / 'train').is_dir():
        sys.exit(f'no photos at {path} (train/ is missing): pass --data')
    print(f'The recipe on {path}: efficientnet_lite0, sz {sz}, bs {bs}, {n_cycle} cycles per fit, '
          f'torch threads {torch.get_num_threads()}')
    set_seed(42)
    work = Path(tempfile.mkdtemp(prefix='fastlearn-docs-'))
    run: dict = {'data': path.name, 'arch': 'efficientnet_lite0', 'sz': sz, 'bs': bs, 'lr': lr,
                 'bn_freeze': bn_freeze,
                 'machine': f'{platform.machine()}, {os.cpu_count()} cores, torch '
                            f'{torch.__version__}, {torch.get_num_threads()} threads, '
                            f'{"CUDA" if torch.cuda.is_available() else "CPU"}'}
    t0 = time.perf_counter()
    clock = lambda: round(time.perf_counter() - t0, 1)  # noqa: E731

    classes = sorted(p.name for p in (path / 'train').iterdir() if p.is_dir())
    files = [path / 'valid' / c / f for c in classes for f in sorted(os.listdir(path / 'valid' / c))[:3]]
    save(plots_from_files(files, figsize=(12, 3), rows=1, titles=[f.parent.name for f in files]),
         'recipe_data', photos=True)

    tfms = tfms_from_model(efficientnet_lite0, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(path, bs=bs, tfms=tfms)
    run.update(n_train=len(data.trn_ds), n_valid=len(data.val_ds), classes=data.classes)
    aug = ImageClassifierData.from_paths(path, bs=2, tfms=tfms, num_workers=0)
    ims = [aug.trn_ds.denorm(next(iter(aug.aug_dl))[0])[1] for _ in range(6)]
    save(plots(ims, figsize=(9, 5), rows=2), 'recipe_augmentations', photos=True)

    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True,
                                   tmp_name=str(work / 'tmp'), models_name=str(work / 'models'))
    learn.activations('trn'), learn.activations('val')
    run['seconds_precompute'] = clock()
    learn.lr_find(num_it=100)
    run['lr_find'] = {'iterations': len(learn.sched.losses), 'suggested': round(learn.sched.suggest_lr(), 5)}
    save(learn.sched.plot(suggestion=True), 'recipe_lr_find', 'learn.sched.plot() after lr_find()')

    phases = {}
    learn.fit(lr, 1)
    phases['head, precomputed: fit(lr, 1)'] = _epochs(learn.sched)
    run['seconds_after_head'] = clock()
    learn.precompute = False
    learn.fit(lr, n_cycle, cycle_len=1)
    phases[f'head, augmented: fit(lr, {n_cycle}, cycle_len=1)'] = _epochs(learn.sched)
    save(learn.sched.plot_lr(), 'recipe_plot_lr_head', f'fit({lr:g}, {n_cycle}, cycle_len=1)')
    run['seconds_after_augmented'] = clock()
    learn.unfreeze()
    if not bn_freeze:  # the comparison run: statistics that train, without the table's clip
        learn.bn_freeze(False)
        learn.clip = None
    lrs = np.array([lr / 100, lr / 10, lr])
    learn.fit(lrs, n_cycle, cycle_len=1, cycle_mult=2)
    phases[f'all layers: fit([lr/100, lr/10, lr], {n_cycle}, cycle_len=1, cycle_mult=2)'] = _epochs(learn.sched)
    save(learn.sched.plot_lr(), 'recipe_plot_lr_all', 'unfrozen: differential rates, cycle_mult=2')
    save(learn.sched.plot_loss(), 'recipe_plot_loss', 'training loss, all layers')
    run['seconds_after_unfrozen'] = clock()
    run['phases'] = phases

    log_preds, y = learn.predict_with_targs()
    tta_preds, y_tta = learn.TTA()
    probs = np.mean(np.exp(tta_preds), 0)
    run['accuracy'] = round(accuracy(log_preds, y), 4)
    run['accuracy_tta'] = round(accuracy(probs, y_tta), 4)
    cm = confusion_matrix(y_tta, probs.argmax(1))
    run['confusion_matrix'] = cm.tolist()
    save(plot_confusion_matrix(cm, data.classes, figsize=(4.5, 4)), 'recipe_confusion_matrix')
    res = ImageModelResults(data.val_ds, tta_preds, y_tta, classes=data.classes)
    run['most_confused'] = [list(t) for t in res.most_confused()]
    save(res.plot_top_losses(9, figsize=(9, 9)), 'recipe_top_losses', photos=True)
    for c in data.classes:
        save(res.plot_most_incorrect(c, figsize=(10, 3.5)), f'recipe_most_incorrect_{c}', photos=True)
        save(res.plot_most_uncertain(c, figsize=(10, 3.5)), f'recipe_most_uncertain_{c}', photos=True)
    run['seconds_total'] = clock()
    shutil.rmtree(work, ignore_errors=True)  # the cache and models of this run
    (FIGURES / 'recipe_run.json').write_text(json.dumps(run, indent=1) + '\n')
    print(json.dumps(run, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('parts', nargs='*', choices=['sgdr', 'recipe'], default=['sgdr', 'recipe'])
    p.add_argument('--data', type=Path, default=DOGSCATS, help='train/ and valid/ photos (default %(default)s)')
    p.add_argument('--sz', type=int, default=128)
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--cycles', type=int, default=3, help="cycles per fit (the course's 3)")
    p.add_argument('--lr', type=float, default=1e-2, help="the head's learning rate (the course's 1e-2)")
    p.add_argument('--no-bn-freeze', dest='bn_freeze', action='store_false',
                   help="let the BatchNorm layers of the unfrozen body update their statistics (overriding the "
                        "architecture table's frozen statistics and gradient clip)")
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads (default: torch\'s choice; 1 is faster on a busy machine)')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if 'sgdr' in args.parts:
        sgdr_figures()
    if 'recipe' in args.parts:
        recipe_figures(args.data, args.sz, args.bs, args.cycles, args.lr, args.bn_freeze)


if __name__ == '__main__':
    main()
