"""Lesson 3's multi-label and point recipes on CamVid, with their figures and wall times, each
beside a baseline measured in the same run.

    .venv/bin/python bench/lesson3_labels.py [--data ../shared/data/camvid] [--what tags points]
                                             [--sz 180 240] [--seed 0] [--threads 2]
                                             [--points-figure docs/figures/lesson3_points.png]

Tags (`labels.csv`, valid = `valid.txt`): EfficientNet-Lite0 with its offline weights, a head
on cached activations (6 epochs), then the whole model on augmented images (4 epochs), then TTA.
F2 is averaged over images, as the Planet competition scored it:

    f2 at 0.2          one fixed threshold, chosen before looking (honest)
    f2 (course)        the course's `f2`: the best of thresholds 0.17..0.23 on the valid set
    per-tag thresholds `opt_thresholds` chosen on the valid set itself (flattering: an upper bound)
    macro F2 over tags one F2 per tag, averaged: the rare tags (Car, Pedestrian, ...) count
    baseline           each tag's training frequency as its probability, the same figures

Most photos carry most tags (Sky, Road, Building...), so F2 averaged over images is high for the
baseline too; the macro F2 over tags shows what the model adds.

Points (`car_points.csv`, 'y x' of the car pixels' centre): `point_head` (soft-argmax) on the
unpooled maps, L1 on coordinates scaled to [-1, 1], Adam; head on cached activations (12
epochs), then the whole model on flipped / rotated / zoomed images (6 epochs), then TTA with
each augmentation undone. Distances are in pixels of the 480x360 photo; the baseline predicts
the training set's mean point.

The cache and saved weights go to a temp folder (the data folder is never written).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.conv_learner import (ConvLearner, CropType, ImageFileList, L1LossFlat,  # isort: skip
                                    TfmType, efficientnet_lite0, f2, fbeta, tfms_from_model,
                                    transforms_side_on)
from fastlearn.core import set_seed  # isort: skip

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastlearn.multilabel import TagInterpretation, f2_samples, opt_thresholds  # noqa: E402
from fastlearn.regression import mean_distance, plot_points, point_head  # noqa: E402
from fastlearn.transforms import RandomFlip, RandomRotateZoom  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'camvid'


def tag_data(path: Path, sz: tuple[int, int], bs: int = 32):
    tfms = tfms_from_model(efficientnet_lite0, sz, aug_tfms=transforms_side_on, max_zoom=1.1,
                           crop_type=CropType.NO)
    return (ImageFileList.from_csv(path, 'labels.csv', folder='images').label_from_csv()
            .split_by_fname_file('valid.txt').transform(tfms).databunch(bs=bs, num_workers=0))


def point_data(path: Path, sz: tuple[int, int], bs: int = 16):
    tfms = tfms_from_model(efficientnet_lite0, sz, aug_tfms=[RandomFlip(), RandomRotateZoom(5, 1.1, 0.05)],
                           max_zoom=1.1, crop_type=CropType.NO, tfm_y=TfmType.COORD)
    return (ImageFileList.from_csv(path, 'car_points.csv', folder='images')
            .label_from_csv(points=True).split_by_fname_file('valid.txt')
            .transform(tfms, tfm_y=True).databunch(bs=bs, num_workers=0))


def _f2s(p: np.ndarray, y: np.ndarray) -> str:
    return (f'f2 at 0.2 {f2_samples(p, y, 0.2):.4f}, f2 (course) {f2(p, y):.4f}, per-tag '
            f'thresholds on valid {f2_samples(p, y, opt_thresholds(p, y)):.4f}, '
            f'macro F2 over tags at 0.2 {fbeta(p, y, 2, 0.2, average="macro"):.4f}')


def tags(path: Path, sz: tuple[int, int], tmp: Path, seed: int) -> None:
    set_seed(seed)
    t0 = time.perf_counter()
    data = tag_data(path, sz)
    freq = data.trn_y.mean(0)
    base = np.broadcast_to(freq, data.val_y.shape)
    print(f'tags: {len(data.trn_ds)} train, {len(data.val_ds)} valid, {data.c} tags, sz {sz}')
    print(f'  baseline (training frequencies): {_f2s(base, data.val_y)}')
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True, metrics=[f2],
                                   tmp_name=str(tmp / 'tmp'), models_name=str(tmp / 'models'),
                                   quiet=True)
    learn.fit(1e-2, 3, cycle_len=1)
    learn.fit(1e-2, 3, cycle_len=1)
    print(f'  head, cached (6 epochs): {_f2s(*learn.predict_with_targs())}  '
          f'[{time.perf_counter() - t0:.0f} s]')
    learn.precompute = False
    learn.unfreeze()
    lrs = np.array([1e-4, 1e-3, 1e-2])
    learn.fit(lrs, 2, cycle_len=1)
    learn.fit(lrs, 1, cycle_len=2)
    p, y = learn.predict_with_targs()
    print(f'  unfrozen, augmented (4 epochs): {_f2s(p, y)}  [{time.perf_counter() - t0:.0f} s]')
    tp, ty = learn.TTA()
    tp = tp.mean(0)
    print(f'  TTA (4 augmented passes + plain): {_f2s(tp, ty)}  [{time.perf_counter() - t0:.0f} s]')
    print(TagInterpretation(p, y, data.classes, 0.2))
    print(f'  most confused (missed, invented, images): '
          f'{TagInterpretation(p, y, data.classes, 0.2).most_confused(3)}')


def points(path: Path, sz: tuple[int, int], tmp: Path, seed: int, figure: Path | None = None
           ) -> None:
    set_seed(seed)
    t0 = time.perf_counter()
    data = point_data(path, sz)
    k = 360 / sz[0]  # pixels of the 480x360 photo per pixel of the model's image
    base = mean_distance(np.broadcast_to(data.trn_y.reshape(-1, 2).mean(0), data.val_y.shape),
                         data.val_y)
    print(f'points: {len(data.trn_ds)} train, {len(data.val_ds)} valid, sz {sz}')
    print(f'  baseline (the training mean point): {base:.1f} px')
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True, crit=L1LossFlat(),
                                   custom_head=point_head(1280), opt_fn=torch.optim.Adam,
                                   metrics=[mean_distance], tmp_name=str(tmp / 'tmp'),
                                   models_name=str(tmp / 'models'), quiet=True)
    dist = learn.fit(3e-3, 4, cycle_len=3)[1] * k
    print(f'  head, cached (12 epochs): {dist:.1f} px  [{time.perf_counter() - t0:.0f} s]')
    learn.precompute = False
    learn.unfreeze()
    lr = 3e-4
    for _ in range(3):
        dist = learn.fit(np.array([lr / 10, lr / 3, lr]), 1, cycle_len=2)[1] * k
    print(f'  unfrozen, augmented (6 epochs): {dist:.1f} px  [{time.perf_counter() - t0:.0f} s]')
    p, y = learn.TTA()
    print(f'  TTA (4 augmented passes undone + plain): {mean_distance(p.mean(0), y) * k:.1f} px, '
          f'plain pass {mean_distance(p[0], y) * k:.1f} px  [{time.perf_counter() - t0:.0f} s]')
    if figure is not None:  # titles in the model's pixels (half the photo's at 180x240)
        plot_points(learn, 8, p[0], figsize=(14, 5)).savefig(figure, dpi=80, bbox_inches='tight')
        print(f'  figure: {figure}')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', type=Path, default=DEFAULT)
    ap.add_argument('--what', nargs='+', default=['tags', 'points'], choices=['tags', 'points'])
    ap.add_argument('--sz', type=int, nargs=2, default=[180, 240])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--points-figure', type=Path, default=None,
                    help='write the plot of predicted and true points there (a .png)')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', '2')))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore', message='precompute=True')
    print(f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, load average '
          f'{" ".join(f"{v:.2f}" for v in os.getloadavg())}, torch {torch.__version__}, '
          f'{args.threads} threads, seed {args.seed}')
    with tempfile.TemporaryDirectory() as tmp:
        if 'tags' in args.what:
            tags(args.data, tuple(args.sz), Path(tmp), args.seed)
        if 'points' in args.what:
            points(args.data, tuple(args.sz), Path(tmp), args.seed, args.points_figure)


if __name__ == '__main__':
    main()
