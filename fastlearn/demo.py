"""Lesson 1 end to end, as `fastlearn train` and `fastlearn demo` run it, and the demo's data.

    r = run_recipe('data/dogscats', 'efficientnet_lite0', 'out/dogscats', sz=128)
    r.accuracy, r.accuracy_tta, r.files        # out/ holds model.pth, plots and report.md
    write_digits('out/demo/digits')            # scikit-learn's digits as an image folder

`sklearn.datasets.load_digits` ships inside scikit-learn (1797 8x8 grayscale images of the
digits 0-9), so the demo needs no download and gives the same folder on every machine.
torch and matplotlib are imported inside the functions (the command's `--help` stays quick).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ['run_recipe', 'RecipeResult', 'recipe_epochs', 'diff_lrs', 'choose_lr', 'choose_unfrozen_lrs',
           'write_digits', 'LR_RANGE', 'DEMO', 'DIGITS_PX']

# lr_find's suggestion (fastai 2's "valley") suits Adam; for SGD with momentum it is cautious:
# on the digits it says 2.5e-3, with which the demo ends at 92% (94% with TTA), against 97-99%
# with the course's usual 1e-2 and 99% with 3e-2. So the suggestion is kept within [1e-2, 1e-1]
# (past 1e-1 SGD tends to diverge). On dogscats it says 2e-3; 1e-2 gave 94% in 3 epochs.
LR_RANGE = (1e-2, 1e-1)
AUGS = {'side_on': 'transforms_side_on', 'top_down': 'transforms_top_down', 'basic': 'transforms_basic'}
PHASES = ('head, precomputed', 'head, augmented', 'all layers')
# The demo's settings, measured on 2 CPU cores (about 2 minutes): at sz 32 the body's last maps
# are 1x1 and its features separate the digits badly (30% for a linear probe, 94% at sz 48-64);
# digits are unlike ImageNet, so the course's lr/9, lr/3, lr (97-99%) rather than lr/100, lr/10,
# lr (93-96%); no flips for digits; tiny PNGs load faster in-process than in worker processes.
# BatchNorm trains once unfrozen, its statistics moving from ImageNet's to the digits': kept frozen
# (the table's choice for photos) the SGDR restarts cost 3-7 points and the run ends near 96 %.
# Once they train (carried to the digits' at unfreeze, so the model does not jump: batch_norm.py),
# the unfrozen top rate is at least BN_TRAINS_LR_MULT times the head's (fine_tuning.py says why).
# lr_find's suggestion is cautious for SGD here, as it is for the head.
DEMO: dict[str, Any] = {'arch': 'efficientnet_lite0', 'sz': 64, 'bs': 32, 'epochs': 3, 'aug': 'basic',
                        'lr_ratio': 3, 'workers': 0, 'bn_freeze': False}


def recipe_epochs(n: int) -> tuple[int, int, int]:
    """Epochs per phase for `--epochs n`: 1 on cached activations, n cycles of one epoch with
    augmentation, n cycles with cycle_mult=2 on all layers (2**n - 1 epochs). n=3 is the course's
    recipe, 1 + 3 + 7."""
    return 1, n, 2 ** n - 1


def diff_lrs(lr: float, n_groups: int, ratio: float = 10) -> Any:
    """Differential rates, earliest group slowest: `[lr/100, lr/10, lr]` for 3 groups and ratio
    10 (the course's for photos like ImageNet's; ratio 3 gives its `[lr/9, lr/3, lr]`)."""
    return lr / ratio ** np.arange(n_groups - 1, -1, -1, dtype=float)


def choose_lr(learn: Any) -> tuple[float, float]:
    """`(lr, suggestion)`: `learn.sched.suggest_lr()` after 100 lr_find steps on the cached
    activations (a second or two), kept within `LR_RANGE`."""
    learn.lr_find(num_it=100)
    suggestion = float(learn.sched.suggest_lr())
    return min(max(suggestion, LR_RANGE[0]), LR_RANGE[1]), suggestion


@dataclass
class RecipeResult:
    """What `run_recipe` measured; `files` maps what each output shows to its name in `out`;
    `learn` is the trained learner, for more interpretation in a notebook."""
    accuracy: float
    accuracy_tta: float
    lr: float
    lr_suggested: float | None
    lrs: list[float]
    epochs: tuple[int, int, int]
    seconds: float
    classes: list[str]
    n_train: int
    n_valid: int
    settings: str
    path: Path
    out: Path
    files: dict[str, str]
    learn: Any = field(default=None, repr=False)
    best: tuple[str, int] | None = None
    lrs_note: str = ''
    history: list[tuple[str, int, float]] = field(default_factory=list)  # (phase, epoch, accuracy)



def run_recipe(path: str | os.PathLike, arch: str = 'efficientnet_lite0',
               out: str | os.PathLike = 'fastlearn-out', *, sz: int = 128, bs: int = 32,
               epochs: int = 3, lr: float | None = None, lr_ratio: float = 10, aug: str = 'side_on',
               bn_freeze: bool | None = None, workers: int | None = None, quiet: bool = False,
               seed: int = 42, device: str | None = None) -> RecipeResult:
    """Lesson 1 on `path/train/<class>/*` and `path/valid/<class>/*`: choose lr, train the head
    on precomputed activations, then with augmentation, then every layer at differential rates
    (`recipe_epochs(epochs)`), then TTA. Writes the model, plots and report.md into `out`, and
    nothing into `path`. `bn_freeze` overrides the architecture table's choice of keeping the
    body's BatchNorm statistics once unfrozen. The best validation epoch of the whole recipe is
    kept: if a later epoch is worse, its weights are put back before TTA and export, and the
    report says which phase and epoch the model comes from. `device` ('cpu', 'cuda', ...)
    defaults to a GPU when there is one."""
    from . import transforms
    from .archs import ARCHS
    from .conv_learner import ConvLearner, ImageClassifierData, tfms_from_model
    from .core import set_seed
    from .distributed import is_main, main_only
    quiet = quiet or not is_main()  # under torchrun, rank 0 reports and writes; all train
    start, out, say = time.perf_counter(), Path(out).resolve(), _say(quiet)
    set_seed(seed)
    a = ARCHS[arch]  # the table's row: its stats, not those timm has for the same name
    tfms = tfms_from_model(a, sz, aug_tfms=getattr(transforms, AUGS[aug]), max_zoom=1.1)
    data = ImageClassifierData.from_paths(path, bs=bs, tfms=tfms, num_workers=workers)
    settings = f'{arch} at {sz}x{sz} px, batch size {bs}, {aug} augmentation'
    say(f'{len(data.trn_ds)} train and {len(data.val_ds)} valid images, {data.c} classes; {settings}')
    with warnings.catch_warnings():  # the recipe itself turns precompute off for augmentation
        warnings.filterwarnings('ignore', message='precompute=True')
        # absolute paths, or the learner's tmp/ (the cache) and models/ would go into `path`
        learn = ConvLearner.pretrained(a, data, precompute=True, tmp_name=str(out / 'tmp'),
                                       models_name=str(out / 'models'), quiet=quiet,
                                       device=device)
    if bn_freeze is not None:
        learn.bn_freeze(bn_freeze)
    if not learn._bn_freeze:  # the table's body clip is for frozen BatchNorm (archs.py says why)
        learn.clip = None
    bn = 'frozen' if learn._bn_freeze else "trains (carried to the data's statistics at unfreeze)"
    settings += (f'; once unfrozen, BatchNorm {bn}, '
                 f'gradient clip {learn.clip or "none"}')
    files, suggested = {}, None
    if lr is None:
        lr, suggested = choose_lr(learn)
        files['learning-rate finder'] = main_only(lambda: _save(_plot_lr_find(learn.sched, lr),
                                                                out / 'lr_find.png'))
        say(f'lr {lr:.3g} (lr_find suggested {suggested:.3g}, kept within {LR_RANGE[0]:g}..{LR_RANGE[1]:g})')
    scheds, lrs, lr_note, best = _train(learn, lr, lr_ratio, epochs, say)
    if best.restore(learn):
        say(f'kept the best epoch: {best.where[0]}, epoch {best.where[1]} '
            f'(accuracy {best.metrics[1]:.4f}); the last epoch was worse')
    acc, acc_tta, res = _evaluate(learn)
    files.update(main_only(_write_outputs, learn, res, scheds, out))
    r = RecipeResult(acc, acc_tta, lr, suggested, lrs.tolist(), recipe_epochs(epochs),
                     time.perf_counter() - start, [str(c) for c in data.classes or []], len(data.trn_ds),
                     len(data.val_ds), settings, Path(path).resolve(), out, files, learn,
                     best.where, lr_note, [(PHASES[p], e, m[1]) for p, sc in enumerate(scheds)
                                           for e, m in enumerate(sc.epoch_metrics)])
    main_only(_write_text, out / 'report.md', _report(r, scheds))
    return r


def _write_text(path: Path, text: str) -> None:
    from .core import atomic_write
    with atomic_write(path, 'w') as f:
        f.write(text)


def _train(learn: Any, lr: float, ratio: float, n: int, say) -> tuple[list, Any, str, Any]:
    """The three phases, each epoch offered to a `KeepBest`; returns each phase's `learn.sched`,
    the unfrozen rates, how they were chosen, and the keeper."""
    from .guards import KeepBest
    e1, e2, e3 = recipe_epochs(n)
    best = KeepBest()
    say(f'phase 1/3, {PHASES[0]}: {e1} epoch at lr {lr:.3g}')
    learn.fit(lr, 1, callbacks=[best.phase(PHASES[0])])
    scheds = [learn.sched]
    learn.precompute = False
    say(f'phase 2/3, {PHASES[1]}: {e2} cycle(s) of 1 epoch at lr {lr:.3g}')
    learn.fit(lr, n, cycle_len=1, callbacks=[best.phase(PHASES[1])])
    scheds.append(learn.sched)
    learn.unfreeze()
    lrs, note = choose_unfrozen_lrs(learn, lr, ratio)
    say(f'phase 3/3, {PHASES[2]}: {n} cycle(s), cycle_mult 2, {e3} epoch(s) at lrs '
        f'{", ".join(f"{x:.3g}" for x in lrs)} ({note})')
    learn.fit(lrs, n, cycle_len=1, cycle_mult=2, callbacks=[best.phase(PHASES[2])])
    return scheds + [learn.sched], lrs, note, best


def choose_unfrozen_lrs(learn: Any, lr: float, ratio: float) -> tuple[Any, str]:
    """The course's step 7, "use lr_find() again": an lr finder over every layer group with
    differential rates (`diff_lrs`, last group swept from 1e-5), for up to one epoch (100 batches
    at most). Its suggestion is the last group's rate, within bounds that depend on the body's
    BatchNorm: while its statistics stay frozen (`learn.bn_freeze(True)`), never above the
    head's `lr`; while they train, at least `BN_TRAINS_LR_MULT` times `lr` (and at most
    `LR_RANGE[1]`). If the sweep finds no descent (one noisy epoch of augmented batches can end
    above its start), the bound itself. Returns the rates and a note saying which rule chose them.
    """
    from .fine_tuning import BN_TRAINS_LR_MULT
    n_groups = len(learn.layer_groups)
    if getattr(learn, '_bn_freeze', True):
        lo, lo_text, hi, hi_text = 0.0, '', lr, f'the head lr {lr:.3g}'
    else:
        lo, hi, hi_text = BN_TRAINS_LR_MULT * lr, LR_RANGE[1], f'{LR_RANGE[1]:g}'
        lo_text = (f"{BN_TRAINS_LR_MULT:g}x the head lr, {lo:.3g}, as the body's BatchNorm "
                   'statistics train')
    learn.lr_find(start_lr=diff_lrs(1e-5, n_groups, ratio), num_it=min(100, len(learn.data.trn_dl)))
    try:
        suggestion = float(learn.sched.suggest_lr())
    except ValueError:
        top, text = (lo, lo_text) if lo else (hi, hi_text)
        return diff_lrs(top, n_groups, ratio), f'lr_find found no descent: {text}'
    top = min(max(suggestion, lo), hi)
    note = f'lr_find suggested {suggestion:.3g}'
    if top != suggestion:
        note += f', raised to {lo_text}' if top > suggestion else f', capped at {hi_text}'
    return diff_lrs(top, n_groups, ratio), note


def _evaluate(learn: Any) -> tuple[float, float, Any]:
    """Accuracy without and with TTA, and the interpretation of the TTA predictions."""
    from .metrics import accuracy
    from .plots import ImageModelResults
    log_preds, y = learn.predict_with_targs()
    tta, y_tta = learn.TTA()
    res = ImageModelResults(learn.data.val_ds, tta, y_tta, classes=learn.data.classes)
    return accuracy(log_preds, y), accuracy(np.mean(np.exp(tta), 0), y_tta), res


def _say(quiet: bool):
    return (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))


# --- outputs ---------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> str:
    """Write a figure as PNG, atomically, close it, and return its file name."""
    import matplotlib.pyplot as plt
    from .core import atomic_write
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    return path.name


def _plot_lr_find(sched: Any, lr: float) -> Any:
    fig = sched.plot(suggestion=True)
    fig.axes[0].axvline(lr, color='tab:green', label=f'lr used {lr:.2g}')
    fig.axes[0].legend()
    return fig


def _plot_phases(scheds: list, what: str) -> Any:
    """The smoothed training loss (a colour per phase) or each group's lr (a colour per group)
    over the whole run; grey lines mark where each phase starts."""
    from .core import subplots
    fig, ax = subplots(figsize=(8, 4))
    start = 0
    for i, s in enumerate(scheds):
        y = np.asarray(s.losses if what == 'loss' else s.group_lrs, float).reshape(len(s.losses), -1)
        for g in range(y.shape[1]):
            label = PHASES[i] if what == 'loss' else f'group {g}' if i == 0 else None
            ax.plot(start + np.arange(len(y)), y[:, g], color=f'C{i if what == "loss" else g}', label=label)
        ax.axvline(start, color='grey', linewidth=0.5)
        start += len(y)
    if what == 'loss':  # the validation loss at each epoch's end: a collapse shows here
        xs, ys, start = [], [], 0
        for s in scheds:
            per_epoch = len(s.losses) / max(len(s.epoch_metrics), 1)
            xs += [start + per_epoch * (e + 1) for e in range(len(s.epoch_metrics))]
            ys += [m[0] for m in s.epoch_metrics]
            start += len(s.losses)
        ax.plot(xs, ys, 'k.--', label='validation loss')
    ax.set_xlabel('iteration (phases: ' + '; '.join(PHASES) + ')')
    ax.set_ylabel('loss (training smoothed; validation at epoch ends)' if what == 'loss' else 'learning rate')
    ax.set_yscale('linear' if what == 'loss' else 'log')
    ax.legend()
    return fig


def _write_outputs(learn: Any, res: Any, scheds: list, out: Path) -> dict[str, str]:
    from sklearn.metrics import confusion_matrix
    from .plots import plot_confusion_matrix
    learn.export(out / 'model.pth')
    n = len(res.classes)
    cm = confusion_matrix(res.y, res.preds, labels=list(range(n)))
    cm_fig = plot_confusion_matrix(cm, res.classes, figsize=(max(5, 0.5 * n + 2),) * 2)
    return {'model': 'model.pth',
            'training loss': _save(_plot_phases(scheds, 'loss'), out / 'loss.png'),
            'learning-rate schedule': _save(_plot_phases(scheds, 'lr'), out / 'lr_schedule.png'),
            'confusion matrix (with TTA)': _save(cm_fig, out / 'confusion_matrix.png'),
            'top losses (with TTA)': _save(res.plot_top_losses(9), out / 'top_losses.png')}


def _report(r: RecipeResult, scheds: list) -> str:
    names = ', '.join(r.classes[:20]) + (', ...' if len(r.classes) > 20 else '')
    lr_note = 'from --lr' if r.lr_suggested is None else \
        f'lr_find suggested {r.lr_suggested:.3g}, kept within {LR_RANGE[0]:g}..{LR_RANGE[1]:g}'
    kept = 'none' if r.best is None else f'{r.best[0]}, epoch {r.best[1]}: the best validation epoch of the run'
    rows = [f'| {PHASES[p]} | {e} | {m[0]:.4f} | {m[1]:.4f} |'
            + (' **kept**' if r.best == (PHASES[p], e) else '')
            for p, s in enumerate(scheds) for e, m in enumerate(s.epoch_metrics)]
    plots = [f'### {what}\n\n![{what}]({f})\n' for what, f in r.files.items() if f.endswith('.png')]
    return '\n'.join([
        f'# fastlearn: {r.path.name}', '',
        f'**Accuracy {r.accuracy:.4f}** without TTA, **{r.accuracy_tta:.4f}** with TTA, on the '
        f'{r.n_valid} validation images.', '', '| | |', '|---|---|',
        f'| data | `{r.path}`: {r.n_train} train, {r.n_valid} valid images |',
        f'| classes | {len(r.classes)}: {names} |',
        f'| model | {r.settings} |',
        f'| learning rate | {r.lr:.3g} ({lr_note}); '
        f'all layers: {", ".join(f"{x:.3g}" for x in r.lrs)} ({r.lrs_note}) |',
        f'| model kept | {kept} |',
        f'| epochs | {sum(r.epochs)} = {" + ".join(map(str, r.epochs))} ({"; ".join(PHASES)}) |',
        f'| time | {r.seconds:.0f} s |',
        f'| exported model | [model.pth](model.pth): `fastlearn predict {r.out / "model.pth"} IMAGE...` |',
        '', '## Epochs', '', '| phase | epoch | valid loss | accuracy | |', '|---|---|---|---|---|', *rows,
        '', '## Plots', '', *plots])


# --- the demo's data -------------------------------------------------------------------------
DIGITS_PX = 32  # 8x8 upscaled 4x (bicubic); the transforms bring them to the demo's sz


def _digit_png(pixels: np.ndarray, px: int):
    """One 8x8 digit (values 0-16, ink high) as a `px`x`px` grayscale PIL image."""
    from PIL import Image
    im = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8), mode='L')
    return im.resize((px, px), Image.Resampling.BICUBIC)


def write_digits(dest: str | os.PathLike, *, px: int = DIGITS_PX, val_pct: float = 0.2,
                 seed: int = 42) -> Path:
    """Write `dest/{train,valid}/<digit>/<index>.png` and return `dest`; a folder already
    written is reused as it is (its files keep their dates, so a precompute cache stays valid).

    The split is `get_cv_idxs(1797, val_pct=val_pct, seed=seed)`: 359 validation images, the
    same on every machine. The folder is written beside `dest` and renamed into place, so an
    interrupted run never leaves a half-written folder that a later run would reuse.
    """
    dest = Path(dest)
    if (dest / 'train').is_dir() and (dest / 'valid').is_dir():
        return dest
    if dest.exists():
        raise FileExistsError(f'{dest} exists but is not a digits folder (no train/ and valid/); '
                              'remove it or pass another --out')
    from sklearn.datasets import load_digits
    from .core import default_mode
    from .dataset import get_cv_idxs
    digits = load_digits()
    is_val = np.zeros(len(digits.target), bool)
    is_val[get_cv_idxs(len(digits.target), val_pct=val_pct, seed=seed)] = True
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.part', dir=dest.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would hide it from teammates
        for i, (pixels, y) in enumerate(zip(digits.images, digits.target)):
            folder = tmp / ('valid' if is_val[i] else 'train') / str(y)
            folder.mkdir(parents=True, exist_ok=True)
            _digit_png(pixels, px).save(folder / f'{i:04d}.png')
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
