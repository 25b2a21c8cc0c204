"""Draw the figures docs/data_block.md shows, from the shared photos (none is drawn by hand).

    .venv/bin/python docs/make_data_block_figures.py     # ~20 s; reads ../shared/data only

Each figure is `data.show_batch(...)` of data built with the chain the page shows, plus one
check of the points by eye: CamVid photos with their car point, before and after a flip, the
point drawn from the transformed target and the car pixels (from the mask,
flipped by the same transforms) tinted, so a point off its car would show.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(1, str(DOCS))
from make_figures import save  # noqa: E402

from fastlearn.conv_learner import (ImageFileList, SegmentationItemList, resnet34,  # noqa: E402
                                    tfms_from_model, transforms_side_on)
from fastlearn.core import set_seed  # noqa: E402
from fastlearn.target_data import open_mask  # noqa: E402
from fastlearn.transforms import CropType, RandomFlip  # noqa: E402

DATA = DOCS.parents[1] / 'shared' / 'data'
CAMVID, DOGSCATS = DATA / 'camvid', DATA / 'dogscats'


def main() -> None:
    set_seed(0)
    tfms = tfms_from_model(resnet34, 128, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = (ImageFileList.from_folder(DOGSCATS).label_from_folder().split_by_folder()
            .transform(tfms).databunch(bs=16, num_workers=0))
    save(data.show_batch(rows=3, ds_type='valid'), 'data_block_classes', photos=True)

    size = (180, 240)
    tfms = tfms_from_model(resnet34, size, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = (ImageFileList.from_csv(CAMVID, 'labels.csv', folder='images')
            .label_from_csv().split_by_fname_file('valid.txt')
            .transform(tfms).databunch(bs=16, num_workers=0))
    save(data.show_batch(rows=2), 'data_block_tags', photos=True)

    codes = np.loadtxt(CAMVID / 'codes.txt', dtype=str)
    get_y_fn = lambda x: CAMVID/'labels'/f'{x.stem}_P.png'  # noqa: E731
    src = (SegmentationItemList.from_folder(CAMVID/'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(get_y_fn, classes=codes))
    data = src.transform(tfms, size=size, tfm_y=True).databunch(bs=8, num_workers=0)
    save(data.show_batch(rows=2), 'data_block_masks', photos=True)

    data = (ImageFileList.from_csv(CAMVID, 'car_points.csv', folder='images')
            .label_from_csv(points=True).split_by_fname_file('valid.txt')
            .transform(tfms, tfm_y=True).databunch(bs=8, num_workers=0))
    save(data.show_batch(rows=2), 'data_block_points', photos=True)
    points_by_eye(codes, get_y_fn, size)


def points_by_eye(codes, get_y_fn, size) -> None:
    """Four photos, as they are and flipped, with the point and the car pixels tinted."""
    car = list(codes).index('Car')
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.6))
    srcs = {}
    for p in (0.0, 1.0):
        tfms = tfms_from_model(resnet34, size, aug_tfms=[RandomFlip(p=p)], crop_type=CropType.NO)
        srcs[p] = (
            ImageFileList.from_csv(CAMVID, 'car_points.csv', folder='images')
            .label_from_csv(points=True).no_split().transform(tfms, tfm_y=True)
            .databunch(num_workers=0).trn_ds,
            SegmentationItemList.from_csv(CAMVID, 'car_points.csv', folder='images')
            .no_split().label_from_func(get_y_fn, classes=codes).transform(tfms, tfm_y=True)
            .databunch(num_workers=0).trn_ds)
    pts = srcs[0.0][0]
    on_car = [i for i, f in enumerate(pts.fnames)  # photos whose point is on a car pixel
              if open_mask(get_y_fn(CAMVID / f))[tuple(pts.y[i, 0].astype(int))] == car]
    picks = on_car[::len(on_car) // 4][:4]
    for row, p in enumerate((0.0, 1.0)):
        pts, masks = srcs[p]
        for col, i in enumerate(picks):
            x, yx = pts[i]
            _, m = masks[i]
            ax = axes[row, col]
            ax.imshow(pts.denorm(x))
            ax.imshow(np.ma.masked_not_equal(m.numpy(), car), cmap='autumn', alpha=0.45,
                      vmin=car - 1, vmax=car)
            ax.scatter(yx[:, 1] - 0.5, yx[:, 0] - 0.5, s=120, c='cyan', marker='+', linewidths=3)
            ax.set_title(f"{Path(pts.fnames[i]).name}{' flipped' if p else ''}", fontsize=10)
            ax.axis('off')
    save(fig, 'data_block_points_by_eye', photos=True)


if __name__ == '__main__':
    main()
