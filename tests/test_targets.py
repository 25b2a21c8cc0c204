"""Targets follow the image: non-square sizes, (y, x) points under every augmentation, masks
with Void, and the [-1, 1] scaling of coordinates."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from fastlearn.targets import is_points, scale_coords, unscale_coords
from fastlearn.transforms import (CropType, RandomDihedral, RandomFlip, RandomLighting,
                                  RandomRotate, TfmType, imagenet_stats, tfms_from_stats)


def dots(h: int, w: int, pts: list[tuple[int, int]]) -> Image.Image:
    """A black h x w image with a bright 5x5 dot centred on each (row, col) pixel."""
    a = np.zeros((h, w, 3), np.uint8)
    for r, c in pts:
        a[r - 2:r + 3, c - 2:c + 3] = 255
    return Image.fromarray(a)


def dot_centres(tfms, x: torch.Tensor, pts: np.ndarray) -> np.ndarray:
    """The centre of the bright pixels nearest each transformed point, in continuous pixels."""
    light = tfms.denorm(x).mean(-1)
    rows, cols = np.nonzero(light > 0.5)
    out = []
    for p in pts:
        near = (rows + 0.5 - p[0]) ** 2 + (cols + 0.5 - p[1]) ** 2 < 6 ** 2
        wgt = light[rows[near], cols[near]]
        out.append([(wgt * (rows[near] + 0.5)).sum() / wgt.sum(),
                    (wgt * (cols[near] + 0.5)).sum() / wgt.sum()])
    return np.array(out)


PTS = [(20, 14), (40, 50)]           # (row, col) pixels of the dots
YX = np.array(PTS, np.float32) + 0.5  # their centres in continuous pixels


# ------------------------------------------------------------------------- non-square sizes

@pytest.mark.parametrize('crop_type', list(CropType))
def test_non_square_sizes_give_h_by_w(crop_type):
    im = dots(60, 90, PTS)
    trn, val = tfms_from_stats(imagenet_stats, (24, 40), aug_tfms=[RandomFlip()], max_zoom=1.2,
                               crop_type=crop_type)
    for t in (trn, val):
        x = t(im)
        assert x.shape == (3, 24, 40) and x.dtype == torch.float32
    assert trn.sz == (24, 40) and 'sz=(24, 40)' in repr(trn)
    # the longer side, so a portrait photo still covers 40 columns
    assert val.draft_size == 40
    assert trn.draft_size == (196 if crop_type is CropType.RANDOM_RESIZED else 48)


def test_non_square_valid_resizes_to_cover_then_crops_the_centre():
    # 60x90 to cover 30x30... as (30, 60): scale 0.5 -> 30x45, then cover 60 wide -> 40x60
    im = Image.fromarray(np.arange(60 * 90 * 3, dtype=np.uint32).reshape(60, 90, 3)
                         .astype(np.uint8))
    _, val = tfms_from_stats(imagenet_stats, (30, 60))
    want = v2.functional.center_crop(
        v2.functional.resize(v2.functional.pil_to_tensor(im), [40, 60], antialias=True), [30, 60])
    x = val(im)
    np.testing.assert_allclose(val.denorm(x) * 255, want.permute(1, 2, 0).numpy(), atol=0.01)


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match=r"sz must be an int or an \(h, w\) pair; got \(1, 2, 3\)"):
        tfms_from_stats(imagenet_stats, (1, 2, 3))
    with pytest.raises(ValueError, match=r"sz must be a positive int; got 0"):
        tfms_from_stats(imagenet_stats, (0, 5))
    with pytest.raises(ValueError, match=r"void fills a CLASS target .* got void=11"):
        tfms_from_stats(imagenet_stats, 8, tfm_y=TfmType.COORD, void=11)


# ------------------------------------------------------------------------- points

AUGS = [RandomFlip(p=1.0), v2.RandomVerticalFlip(p=1.0), RandomDihedral(), RandomRotate(25, p=1.0),
        RandomLighting(0.1, 0.1)]


@pytest.mark.parametrize('aug', AUGS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize('crop_type', [CropType.RANDOM, CropType.NO, CropType.RANDOM_RESIZED])
def test_points_stay_under_their_dots(aug, crop_type):
    im = dots(64, 64, PTS)
    trn, _ = tfms_from_stats(imagenet_stats, 48, aug_tfms=[aug], max_zoom=1.2, pad=2,
                             crop_type=crop_type, tfm_y=TfmType.COORD)
    checked = 0
    for _ in range(12):
        x, p = trn(im, YX)
        assert p.shape == (2, 2) and p.dtype == np.float32
        inside = [i for i, q in enumerate(p) if 3 < q[0] < 45 and 3 < q[1] < 45]
        if inside:
            np.testing.assert_allclose(dot_centres(trn, x, p[inside]), p[inside], atol=0.8)
            checked += 1
    assert checked >= 6


def test_points_exact_under_flip_and_squash_on_a_non_square_image():
    im = dots(60, 90, PTS)
    trn, val = tfms_from_stats(imagenet_stats, (30, 45), aug_tfms=[RandomFlip(p=1.0)],
                               crop_type=CropType.NO, tfm_y=TfmType.COORD)
    _, p = val(im, YX)
    np.testing.assert_allclose(p, YX / 2)
    x, p = trn(im, YX)
    np.testing.assert_allclose(p, np.c_[YX[:, 0] / 2, 45 - YX[:, 1] / 2])
    np.testing.assert_allclose(dot_centres(trn, x, p), p, atol=0.5)


def test_points_leaving_the_image_keep_their_coordinates():
    im = dots(40, 40, [(3, 3), (20, 20)])
    _, val = tfms_from_stats(imagenet_stats, 20, tfm_y=TfmType.COORD)  # shorter side 20, centre
    im = im.resize((80, 40))  # 40x80: resized to 20x40, the centre crop drops 10 px each side
    _, p = val(im, np.float32([[3.5, 7], [20, 40]]))
    np.testing.assert_allclose(p, [[1.75, -6.5], [10, 10]])  # the first is outside, kept there


def test_boxes_and_points_are_told_apart_by_shape():
    assert is_points(np.zeros((3, 2))) and is_points(torch.zeros(1, 2))
    assert not is_points(np.zeros(4)) and not is_points(np.zeros((1, 4)))
    _, val = tfms_from_stats(imagenet_stats, 8, tfm_y=TfmType.COORD, crop_type=CropType.NO)
    with pytest.raises(ValueError, match=r"\(n, 2\) array of \(y, x\) points; got 6 numbers"):
        val(dots(16, 16, []), np.zeros(6))


def test_scale_coords_to_minus_one_one_and_back():
    pts = np.float32([[0, 0], [360, 480], [180, 120]])
    s = scale_coords(pts, (360, 480))
    np.testing.assert_allclose(s, [[-1, -1], [1, 1], [0, -0.5]])
    np.testing.assert_allclose(unscale_coords(torch.from_numpy(s), (360, 480)), pts)
    np.testing.assert_allclose(scale_coords([[0, 0, 32, 16]], 32), [[-1, -1, 1, 0]])


# ------------------------------------------------------------------------- masks and Void

def quadrant_mask(sz: int) -> tuple[Image.Image, Image.Image]:
    a = np.zeros((sz, sz), np.uint8)
    a[: sz // 2, : sz // 2] = 255
    return Image.fromarray(a).convert('RGB'), Image.fromarray(np.where(a > 0, 5, 1).astype(np.uint8))


def test_rotation_fills_the_mask_with_void():
    im, mask = quadrant_mask(32)
    trn, _ = tfms_from_stats(imagenet_stats, 32, aug_tfms=[RandomRotate(40, p=1.0)],
                             crop_type=CropType.NO, tfm_y=TfmType.CLASS, void=11)
    seen_void = False
    for _ in range(10):
        x, m = trn(im, mask)
        assert m.dtype == torch.int64 and set(m.unique().tolist()) <= {1, 5, 11}
        light, m = trn.denorm(x).mean(-1), m.numpy()
        yy, xx = np.mgrid[0:32, 0:32]
        inside = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 15 ** 2
        assert (m[(light > 0.9) & inside] == 5).all() and (m[(light < 0.1) & inside] == 1).all()
        seen_void |= (m == 11).any() and not (m[inside] == 11).any()
    assert seen_void


def test_void_pixels_stay_void_and_the_label_255_survives():
    a = np.full((20, 20), 255, np.uint8)
    a[:, :10] = 11  # Void on the left half
    trn, _ = tfms_from_stats(imagenet_stats, (10, 10), aug_tfms=[RandomFlip()], max_zoom=1.3,
                             tfm_y=TfmType.CLASS, void=11)
    for _ in range(5):
        _, m = trn(Image.new('RGB', (20, 20)), Image.fromarray(a))
        assert set(m.unique().tolist()) <= {11, 255}


def test_crop_past_the_border_is_void():
    im, mask = Image.new('RGB', (16, 16)), Image.fromarray(np.full((16, 16), 3, np.uint8))
    trn, _ = tfms_from_stats(imagenet_stats, 16, aug_tfms=[RandomDihedral()],
                             crop_type=CropType.RANDOM, tfm_y=TfmType.CLASS, void=11)
    _, m = trn(im, mask)
    assert (m == 3).all()  # a square turned by 90 degrees still covers the crop
    tall, _ = tfms_from_stats(imagenet_stats, (16, 8), aug_tfms=[RandomDihedral()],
                              crop_type=CropType.NO, tfm_y=TfmType.CLASS, void=11)
    found = set()
    for _ in range(16):
        _, m = tall(im, mask)
        found.add(tuple(sorted(m.unique().tolist())))
    assert found == {(3,), (3, 11)}  # turned on its side, the 8x16 image leaves a Void band
