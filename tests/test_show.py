"""`data.show_batch`: every kind of target drawn, headless, the figure returned."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder
from fastlearn.data_block import ImageFileList, SegmentationItemList
from fastlearn.transforms import CropType, TfmType, imagenet_stats, tfms_from_stats

matplotlib.use('Agg')
TFMS = tfms_from_stats(imagenet_stats, 16)


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_classes_under_each_image_in_a_rows_by_rows_grid(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=3, n_valid=2)
    data = (ImageFileList.from_folder(root).label_from_folder().split_by_folder()
            .transform(TFMS).databunch(bs=2, num_workers=0))
    fig = data.show_batch(rows=2)
    assert len(fig.axes) == 4 and titles(fig) == ['ants', 'ants', 'ants', 'bees']
    assert len(data.show_batch(rows=3).axes) == 6  # 6 items: 2 rows of 3
    fig.savefig(tmp_path / 'b.png')
    assert (tmp_path / 'b.png').stat().st_size > 1000
    with pytest.raises(ValueError, match=r"ds_type must be 'train', 'valid' or 'test'; got 'x'"):
        data.show_batch(ds_type='x')
    with pytest.raises(ValueError, match=r"the test set is empty"):
        data.show_batch(ds_type='test')


def test_tags_and_numbers_as_titles(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=1)
    src = ImageFileList.from_folder(root).split_by_folder()
    tags = src.label_from_func(lambda p: ['x', 'y'] if 'ants' in p.name else ['y'])
    assert titles(tags.transform(TFMS).databunch(num_workers=0).show_batch(rows=2)) == \
        ['x;y', 'x;y', 'y', 'y']
    nums = src.label_from_func(lambda p: float(p.stem[-1]) + 0.25)
    assert titles(nums.transform(TFMS).databunch(num_workers=0).show_batch(rows=1)) == ['0.25']


def test_points_drawn_where_they_are(tmp_path):
    (tmp_path / 'im').mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / 'im' / 'a.png')
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / 'im' / 'b.png')
    (tmp_path / 'p.csv').write_text('image,point\na.png,4.5 10.5\nb.png,1 1\n')
    data = (ImageFileList.from_csv(tmp_path, 'p.csv', folder='im').label_from_csv(points=True)
            .split_by_idx([1]).transform(tfms_from_stats(imagenet_stats, 20,
                                                         crop_type=CropType.NO), tfm_y=True)
            .databunch(num_workers=0))
    fig = data.show_batch(rows=1)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), [[10, 4]])


def test_masks_overlaid_with_a_legend_of_the_codes_present(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'labels').mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'images' / f'{i}.png')
        m = np.full((8, 8), 2, np.uint8)
        m[:4] = 0
        Image.fromarray(m).save(tmp_path / 'labels' / f'{i}.png')
    data = (SegmentationItemList.from_folder(tmp_path / 'images').split_by_idx([1])
            .label_from_func(lambda p: tmp_path / 'labels' / p.name,
                             classes=['Road', 'Car', 'Void'])
            .transform(tfms_from_stats(imagenet_stats, 8), tfm_y=True).databunch(num_workers=0))
    assert data.trn_ds.transform.tfm_y is TfmType.CLASS and data.trn_ds.void == 2
    fig = data.show_batch(rows=1)
    overlay = np.asarray(fig.axes[0].images[1].get_array())
    assert (overlay[4:, :, 3] == 0).all() and (overlay[:4, :, 3] == 0.5).all()  # Void clear
    np.testing.assert_allclose(overlay[0, 0, :3], matplotlib.colormaps['tab20'].colors[0])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ['Road']
