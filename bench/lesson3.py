"""Lesson 3's segmentation recipe on CamVid, and a U-Net epoch against a hand-written loop.

    .venv/bin/python bench/lesson3.py [--camvid ../shared/data/camvid] [--bs 8] [--lr 3e-3]
                                      [--half 6 24] [--full 0 2] [--max-zoom 2]
                                      [--class-weights sqrt_median_frequency] [--opt adamw]
                                      [--compare-repeats 2] [--only recipe compare] [--seed 0]
                                      [--figures docs/figures]

- recipe: `unet_learner(data, efficientnet_lite0, class_weights=...)` (AdamW, fastai v1's
  defaults) trained at half size (180x240) on crops of photos zoomed by 1..`--max-zoom` (so
  objects keep the size they have at full size), `--half F U` epochs: F of one cycle with the
  body frozen (`--lr`), then U unfrozen at `slice(lr/40, lr/4)`; then `set_data` at full size
  (360x480, no zoom) for `--full F U` more epochs the same way at half the rates (0 0 skips
  it). Printed after each stage: global pixel accuracy and mean IoU over the 11 classes on the
  101 validation photos at full size (Void ignored, from the whole set's confusion matrix), wall seconds since
  the start; at the end the same with flip TTA, and the per-class IoU.
- compare: one frozen U-Net epoch at half size, `learn.fit(3e-3, 1)` (quiet, validation with
  pixel accuracy and mean IoU) against a hand-written loop doing the same work: a copy of the
  same network (encoder and decoder), the encoder's parameters `requires_grad=False` and in eval
  (frozen BatchNorm), AdamW (betas 0.9/0.99, weight decay 1e-2) over the decoder, cross-entropy
  with `ignore_index=11`, `loss.item()` per batch, then a validation pass computing the same
  loss and metrics; the same loaders (`num_workers=0`, flips). Sides alternate; best and median
  of `--compare-repeats`. Target: at most 1.05x.

Seeds are set with `set_seed(seed)` before the learner is built. Nothing is written under
`--camvid` (models go to a temporary folder).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.conv_learner import (CropType, SegmentationItemList, efficientnet_lite0,  # isort: skip
                                    set_seed, tfms_from_model, unet_learner)
from fastlearn.layer_optimizer import sgd_momentum  # isort: skip
from fastlearn.seg_learner import UNET_OPT_FN, UNET_WD  # isort: skip
from fastlearn.transforms import RandomFlip  # isort: skip

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_CAMVID = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'camvid'
HALF, FULL = (180, 240), (360, 480)


def load() -> str:
    return f'load {os.getloadavg()[0]:.1f}'


def camvid_data(path: Path, size: tuple[int, int], bs: int, max_zoom: float | None = None):
    """CamVid at `size`; with `max_zoom`, training photos are zoomed by 1..max_zoom and cropped
    at random to `size` (validation photos are resized whole)."""
    codes = np.loadtxt(path / 'codes.txt', dtype=str)
    src = (SegmentationItemList.from_folder(path / 'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(lambda x: path / 'labels' / f'{x.stem}_P.png', classes=codes))
    crop = dict(max_zoom=max_zoom, crop_type=CropType.RANDOM) if max_zoom else dict(crop_type=CropType.NO)
    tfms = tfms_from_model(efficientnet_lite0, size, aug_tfms=[RandomFlip()], **crop)
    return src.transform(tfms, size=size, tfm_y=True).databunch(bs=bs, num_workers=0)


def stage(learn, epochs: tuple[int, int], lr: float) -> None:
    frozen, unfrozen = epochs
    if frozen:
        learn.freeze()
        learn.fit_one_cycle(frozen, lr)
    if unfrozen:
        learn.unfreeze()
        learn.fit_one_cycle(unfrozen, slice(lr / 40, lr / 4))


def recipe(args: argparse.Namespace, tmp: Path) -> None:
    set_seed(args.seed)
    t0 = time.perf_counter()
    learn = unet_learner(camvid_data(args.camvid, HALF, args.bs, args.max_zoom), efficientnet_lite0,
                         models_name=str(tmp / 'models'), tmp_name=str(tmp / 'tmp'),
                         class_weights=args.class_weights,
                         **({'opt_fn': sgd_momentum, 'wd': 0.0} if args.opt == 'sgd' else {}))
    full = camvid_data(args.camvid, FULL, max(args.bs // 2, 2))
    stage(learn, args.half, args.lr)
    trained = time.perf_counter() - t0
    learn.set_data(full)  # the goal is at full size: evaluate there
    ev = learn.interpret()
    print(f'half size {HALF}, {args.half[0]} frozen + {args.half[1]} unfrozen epochs, '
          f'{trained:.0f} s: at {FULL} pixel accuracy {ev.accuracy:.4f}, mIoU {ev.miou:.4f} '
          f'({load()})', flush=True)
    if sum(args.full):
        stage(learn, args.full, args.lr / 2)
        ev = learn.interpret()
        print(f'full size {FULL}, {args.full[0]} frozen + {args.full[1]} unfrozen epochs, '
              f'{time.perf_counter() - t0:.0f} s: pixel accuracy {ev.accuracy:.4f}, mIoU '
              f'{ev.miou:.4f} ({load()})', flush=True)
    ev = learn.interpret(tta=True)
    print(f'with flip TTA: pixel accuracy {ev.accuracy:.4f}, mIoU {ev.miou:.4f}, '
          f'{time.perf_counter() - t0:.0f} s in all')
    print(ev)
    print('most confused (true, predicted, share of pixels):', ev.most_confused(5))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        fig = learn.show_results(rows=3, tta=True)
        fig.savefig(args.figures / 'lesson3_seg_results.png', dpi=80, bbox_inches='tight')
        print(f'wrote {args.figures / "lesson3_seg_results.png"}')


def hand_epoch(model, opt, trn_dl, val_dl, void: int, c: int) -> list[float]:
    """One frozen-encoder epoch and a validation pass, in plain torch."""
    model.train()
    model.encoder.eval()
    for x, y in trn_dl:
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y, ignore_index=void)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    model.eval()
    totals = np.zeros(4)
    with torch.inference_mode():
        for x, y in val_dl:
            out = model(x.contiguous(memory_format=torch.channels_last))
            keep = y != void
            p = out.argmax(1)
            cm = torch.bincount(y[keep] * c + p[keep], minlength=c * c).reshape(c, c).double()
            iou = cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag())
            iou = torch.cat([iou[:void], iou[void + 1:]])
            m = iou[~iou.isnan()].mean().item()
            acc = (p[keep] == y[keep]).double().mean().item()
            totals += len(y) * np.array([F.cross_entropy(out, y, ignore_index=void).item(), acc, m, 1])
    return (totals[:3] / totals[3]).tolist()


def compare(args: argparse.Namespace, tmp: Path) -> None:
    data = camvid_data(args.camvid, HALF, args.bs)
    set_seed(args.seed)
    learn = unet_learner(data, efficientnet_lite0, models_name=str(tmp / 'models'), quiet=True)
    model = copy.deepcopy(learn.model)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    opt = UNET_OPT_FN([p for p in model.parameters() if p.requires_grad], lr=3e-3,
                      weight_decay=UNET_WD)  # the learner's own optimizer, built by hand
    times: dict[str, list[float]] = {'fastlearn': [], 'hand loop': []}
    for r in range(args.compare_repeats):
        order = ['fastlearn', 'hand loop'][::1 if r % 2 == 0 else -1]
        for side in order:
            t = time.perf_counter()
            if side == 'fastlearn':
                vals = learn.fit(3e-3, 1)
            else:
                vals = hand_epoch(model, opt, data.trn_dl, data.val_dl, data.void, data.c)
            times[side].append(time.perf_counter() - t)
            print(f'  round {r + 1} {side}: {times[side][-1]:.1f} s, val loss {vals[0]:.4f}, '
                  f'pixel accuracy {vals[1]:.4f}, mean IoU {vals[2]:.4f} ({load()})', flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f'frozen U-Net epoch at {HALF}, bs {args.bs}: fastlearn {best["fastlearn"]:.1f} s '
          f'(median {statistics.median(times["fastlearn"]):.1f}) vs hand loop '
          f'{best["hand loop"]:.1f} s (median {statistics.median(times["hand loop"]):.1f}): '
          f'{best["fastlearn"] / best["hand loop"]:.2f}x (target <= 1.05x)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--camvid', type=Path, default=DEFAULT_CAMVID)
    ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--opt', choices=['adamw', 'sgd'], default='adamw',
                    help="unet_learner's AdamW, or the course's SGD with momentum 0.9 (no weight decay)")
    ap.add_argument('--half', type=int, nargs=2, default=[6, 24], metavar=('FROZEN', 'UNFROZEN'))
    ap.add_argument('--full', type=int, nargs=2, default=[0, 2], metavar=('FROZEN', 'UNFROZEN'))
    ap.add_argument('--max-zoom', type=float, default=2.0,
                    help='training photos zoomed by 1..this and cropped at half size (0: resized whole)')
    ap.add_argument('--compare-repeats', type=int, default=2)
    ap.add_argument('--only', nargs='+', choices=['recipe', 'compare'], default=['recipe', 'compare'])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--class-weights', default='sqrt_median_frequency',
                    choices=['sqrt_median_frequency', 'median_frequency', 'none'],
                    help="the loss's class weights")
    ap.add_argument('--figures', type=Path, default=None,
                    help='write show_results of the final model here (docs/figures)')
    args = ap.parse_args()
    args.class_weights = None if args.class_weights == 'none' else args.class_weights
    print(f'{time.strftime("%Y-%m-%d %H:%M")}, torch {torch.__version__}, {torch.get_num_threads()} '
          f'threads, OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY")}, {load()}')
    with tempfile.TemporaryDirectory() as tmp:
        if 'compare' in args.only:
            compare(args, Path(tmp))
        if 'recipe' in args.only:
            recipe(args, Path(tmp))


if __name__ == '__main__':
    main()
