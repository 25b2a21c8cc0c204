"""transforms.py: shapes per crop type, exact centre crops, normalisation, stats lookup, targets
that follow the image's random draw, the augmentations' ranges, reprs and error messages."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastlearn.archs import efficientnet_lite0
from fastlearn.transforms import (CropType, RandomDihedral, RandomFlip, RandomLighting,
                                  RandomRotate, TfmType, Transforms, imagenet_stats,
                                  inception_stats, tfms_from_model, tfms_from_stats,
                                  transforms_basic, transforms_side_on, transforms_top_down)
from fastlearn.stats import model_stats

MEAN, STD = (np.array(s, np.float32) for s in imagenet_stats)


def gradient(h: int, w: int) -> np.ndarray:
    """HxWx3 uint8 where every pixel differs from its neighbours: red grows along x, green
    along y, blue along both."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = [xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + 2 * yy) % 256]
    return np.stack(rgb, -1).astype(np.uint8)


def quadrant(sz: int) -> tuple[Image.Image, Image.Image]:
    """An image whose top-left quarter is white (the rest black) and a mask labelling it 5:
    every flip and rotation moves it."""
    a = np.zeros((sz, sz), np.uint8)
    a[: sz // 2, : sz // 2] = 255
    mask = np.where(a > 0, 5, 0).astype(np.uint8)
    return Image.fromarray(a).convert('RGB'), Image.fromarray(mask)


def white_rect(sz: int, top: int, left: int, bottom: int, right: int) -> Image.Image:
    a = np.zeros((sz, sz, 3), np.uint8)
    a[top:bottom, left:right] = 255
    return Image.fromarray(a)


def brightness(tfms: Transforms, x: torch.Tensor) -> np.ndarray:
    return tfms.denorm(x).mean(-1)


def bbox_of(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], np.float32)


# ------------------------------------------------------------------------- shapes and crops

@pytest.mark.parametrize('crop_type', list(CropType))
def test_every_crop_type_gives_sz_square_float32(crop_type):
    im = Image.fromarray(gradient(40, 56))
    trn, val = tfms_from_stats(imagenet_stats, 24, aug_tfms=transforms_top_down, max_zoom=1.3,
                               pad=2, crop_type=crop_type)
    for tfms in (trn, val):
        x, y = tfms(im, 3)
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and x.is_contiguous()
        assert y == 3  # TfmType.NO: the label passes through untouched


def test_valid_is_deterministic_and_exactly_the_centre():
    arr = gradient(48, 64)
    _, val = tfms_from_stats(imagenet_stats, 48)
    x1 = val(Image.fromarray(arr))
    torch.manual_seed(123)  # no random draw in valid
    x2 = val(Image.fromarray(arr))
    assert torch.equal(x1, x2)
    # shorter side is already 48, so valid is a pure centre crop: columns 8..55
    want = (arr[:, 8:56].astype(np.float32) / 255 - MEAN) / STD
    np.testing.assert_allclose(x1.permute(1, 2, 0).numpy(), want, atol=1e-5)


def test_valid_matches_torchvision_resize_and_centre_crop():
    im = Image.fromarray(gradient(90, 70))
    _, val = tfms_from_stats(imagenet_stats, 32)
    ref = v2.Compose([v2.ToImage(), v2.Resize(32, antialias=True), v2.CenterCrop(32)])(im)
    ours = val.denorm(val(im)) * 255
    np.testing.assert_allclose(ours, ref.permute(1, 2, 0).numpy(), atol=1e-3)


def test_no_crop_squashes_the_whole_image():
    arr = gradient(20, 40)
    _, val = tfms_from_stats(imagenet_stats, 20, crop_type=CropType.NO)
    out = val.denorm(val(Image.fromarray(arr))) * 255
    # squashed, not cropped: the first and last columns survive
    assert out[:, 0, 0].max() < 10 and out[:, -1, 0].min() > 245


def test_denorm_round_trip_and_clip():
    arr = gradient(16, 16)
    _, val = tfms_from_stats(imagenet_stats, 16)
    x = val(Image.fromarray(arr))
    np.testing.assert_allclose(val.denorm(x), arr / 255, atol=1e-5)
    batch = val.denorm(torch.stack([x, x]))
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    assert val.denorm(torch.full((3, 2, 2), 50.0)).max() == 1.0
    assert val.denorm(torch.full((3, 2, 2), -50.0)).min() == 0.0


def test_grayscale_and_rgba_become_rgb():
    _, val = tfms_from_stats(imagenet_stats, 8)
    for mode in ('L', 'RGBA', 'P'):
        assert val(Image.new(mode, (10, 12))).shape == (3, 8, 8)


def test_pad_reflects_then_crops_a_window():
    arr = gradient(16, 16)
    padded = np.pad(arr, ((3, 3), (3, 3), (0, 0)), mode='reflect').astype(np.float32)
    trn, _ = tfms_from_stats(imagenet_stats, 16, pad=3)
    offsets = set()
    for _ in range(30):
        out = np.rint(trn.denorm(trn(Image.fromarray(arr))) * 255)
        hits = [(t, left) for t in range(7) for left in range(7)
                if np.array_equal(out, padded[t:t + 16, left:left + 16])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5


# -------------------------------------------------------------------------------- zoom, size

def test_max_zoom_scales_by_up_to_max_zoom():
    im = white_rect(64, 24, 24, 40, 40)  # a 16 px square in the middle
    trn, val = tfms_from_stats(imagenet_stats, 32, max_zoom=2.0, crop_type=CropType.CENTER)
    widths = [(brightness(trn, trn(im))[16] > 0.5).sum() for _ in range(60)]
    assert min(widths) == 8 and 14 <= max(widths) <= 16  # 16 * 32/64 * U(1, 2)
    assert 0.1 < np.mean(np.array(widths) == 8) < 0.5    # zoom applies with p = 0.75
    assert (brightness(val, val(im))[16] > 0.5).sum() == 8


def test_draft_size_keeps_enough_pixels():
    trn, val = tfms_from_stats(imagenet_stats, 128, max_zoom=1.1)
    assert (trn.draft_size, val.draft_size) == (141, 128)
    rrc, rrc_val = tfms_from_stats(imagenet_stats, 128, crop_type=CropType.RANDOM_RESIZED)
    assert rrc.draft_size == math.ceil(128 / math.sqrt(0.08 * 0.75)) == 523
    assert rrc_val.draft_size == 128
    assert tfms_from_stats(imagenet_stats, 16, tfm_y=TfmType.PIXEL, sz_y=64)[1].draft_size == 64


# -------------------------------------------------------------------------------- stats lookup

def test_stats_come_from_the_model():
    assert tfms_from_model(torchvision.models.efficientnet_v2_l, 8)[0].stats == inception_stats
    assert tfms_from_model(torchvision.models.resnet34, 8)[0].stats == imagenet_stats
    arch = SimpleNamespace(stats=((0.1, 0.2, 0.3), (0.4, 0.5, 0.6)))
    trn, val = tfms_from_model(arch, 8)
    assert trn.stats == val.stats == arch.stats

    def my_net():
        return torch.nn.Identity()
    assert tfms_from_model(my_net, 8)[0].stats == imagenet_stats
    assert tfms_from_model('no_such_model_anywhere', 8)[0].stats == imagenet_stats


def test_a_table_name_gets_the_tables_stats_not_timms():
    # the offline EfficientNet-Lite0 weights are TensorFlow's; timm's own were trained on ImageNet stats
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert model_stats('efficientnet_lite0') == model_stats(efficientnet_lite0) == half
    assert tfms_from_model('efficientnet_lite0', 8)[1].stats == half
    assert model_stats('wide_resnet50_2') == imagenet_stats


def test_stats_from_a_timm_name_without_network():
    pytest.importorskip('timm')
    assert tfms_from_model('vit_base_patch16_224', 8)[0].stats == inception_stats
    assert tfms_from_model('resnet50', 8)[0].stats == imagenet_stats


# ----------------------------------------------------------------- targets follow the image

@pytest.mark.parametrize('aug', [RandomFlip(), RandomRotate(40, p=1.0), RandomDihedral(),
                                 v2.RandomVerticalFlip()], ids=repr)
def test_mask_follows_the_image(aug):
    im, mask = quadrant(32)
    trn, _ = tfms_from_stats(imagenet_stats, 32, aug_tfms=[aug], crop_type=CropType.NO,
                             tfm_y=TfmType.CLASS)
    yy, xx = np.mgrid[0:32, 0:32]
    # a rotation mirrors the image's border but fills the mask with 0: compare inside the disc
    inside = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 15 ** 2
    seen = set()
    for _ in range(24):
        x, m = trn(im, mask)
        assert m.dtype == torch.int64 and m.shape == (32, 32)
        assert set(m.unique().tolist()) <= {0, 5}
        light, m = brightness(trn, x), m.numpy()
        assert (m[(light > 0.9) & inside] == 5).all() and (m[(light < 0.1) & inside] == 0).all()
        seen.add(m.tobytes())
    assert len(seen) > 1  # the draws really differed


@pytest.mark.parametrize('crop_type', list(CropType))
def test_mask_follows_zoom_pad_and_crop(crop_type):
    im, mask = quadrant(40)
    trn, _ = tfms_from_stats(imagenet_stats, 24, max_zoom=1.5, pad=2, crop_type=crop_type,
                             tfm_y=TfmType.CLASS,
                             aug_tfms=[RandomFlip(), RandomLighting(0.05, 0.05)])
    for _ in range(10):
        x, m = trn(im, mask)
        light, m = brightness(trn, x), m.numpy()
        assert (m[light > 0.9] == 5).all() and (m[light < 0.1] == 0).all()


def test_boxes_follow_flip_and_dihedral():
    im = white_rect(32, 4, 2, 12, 14)
    box = np.array([[4, 2, 12, 14]], np.float32)  # top, left, bottom, right
    flip, _ = tfms_from_stats(imagenet_stats, 32, aug_tfms=[RandomFlip(p=1.0)],
                              crop_type=CropType.NO, tfm_y=TfmType.COORD)
    x, b = flip(im, box)
    np.testing.assert_array_equal(b, [[4, 18, 12, 30]])
    np.testing.assert_array_equal(bbox_of(brightness(flip, x) > 0.5), b[0])
    dihedral, _ = tfms_from_stats(imagenet_stats, 32, aug_tfms=[RandomDihedral()],
                                  crop_type=CropType.NO, tfm_y=TfmType.COORD)
    for _ in range(16):
        x, b = dihedral(im, box)
        assert b.shape == (1, 4) and b.dtype == np.float32
        np.testing.assert_array_equal(bbox_of(brightness(dihedral, x) > 0.5), b[0])


def test_boxes_follow_rotation_and_zoom():
    im = white_rect(48, 10, 8, 30, 24)
    trn, _ = tfms_from_stats(imagenet_stats, 32, aug_tfms=[RandomRotate(20, p=1.0)],
                             max_zoom=1.3, tfm_y=TfmType.COORD)
    for _ in range(10):
        x, b = trn(im, [10, 8, 30, 24])
        np.testing.assert_allclose(bbox_of(brightness(trn, x) > 0.5), b[0], atol=1.5)


def test_pixel_target_shares_the_draw_at_its_own_size():
    im = Image.fromarray(gradient(40, 40))
    trn, _ = tfms_from_stats(imagenet_stats, 16, aug_tfms=transforms_top_down, max_zoom=1.2,
                             tfm_y=TfmType.PIXEL, sz_y=32)
    x, y = trn(im, im)
    assert x.shape == (3, 16, 16) and y.shape == (3, 32, 32)
    small = v2.functional.resize(y, [16, 16], antialias=True)
    np.testing.assert_allclose(x.numpy(), small.numpy(), atol=0.1)


def test_missing_target_is_an_error():
    trn, _ = tfms_from_stats(imagenet_stats, 8, tfm_y=TfmType.CLASS)
    with pytest.raises(ValueError, match='tfm_y=TfmType.CLASS.*y is None'):
        trn(Image.new('RGB', (8, 8)))


# ----------------------------------------------------------------------------- augmentations

def test_dihedral_reaches_all_8_orientations():
    a = torch.arange(6, dtype=torch.uint8).view(1, 2, 3)
    want = {np.rot90(np.fliplr(a[0].numpy()) if f else a[0].numpy(), k).tobytes()
            for k in range(4) for f in (0, 1)}
    got = {RandomDihedral()(tv_tensors.Image(a))[0].numpy().tobytes() for _ in range(200)}
    assert len(want) == 8 and got == want


@pytest.mark.parametrize('aug', [RandomRotate(30, p=1.0), RandomDihedral(),
                                 RandomLighting(0.2, 0.2)], ids=repr)
def test_augmentations_work_alone_on_tensors_and_pil(aug):
    x = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8)
    out = aug(x)
    assert type(out) is torch.Tensor and out.dtype == torch.uint8 and out.shape[0] == 3
    pil = aug(Image.fromarray(x.permute(1, 2, 0).numpy()))
    assert isinstance(pil, Image.Image) and pil.mode == 'RGB'


def test_rotate_angles_and_probability():
    rot = RandomRotate(10, p=0.75)
    angles = np.array([rot.make_params([])['angle'] for _ in range(2000)])
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 9.5
    assert 0.2 < np.mean(angles == 0) < 0.3


def test_lighting_draws_and_exact_values():
    light = RandomLighting(0.05, 0.05)
    draws = [light.make_params([]) for _ in range(1000)]
    bs, cs = np.array([d['b'] for d in draws]), np.array([d['c'] for d in draws])
    assert -0.05 <= bs.min() < -0.04 and 0.04 < bs.max() <= 0.05
    assert 1 / 1.05 - 1e-9 <= cs.min() < 0.96 and 1.04 < cs.max() <= 1.05 + 1e-9
    img = tv_tensors.Image(torch.tensor([[[0, 100], [200, 255]]], dtype=torch.uint8))
    out = light.transform(img, {'b': 0.0, 'c': 2.0})  # mean 138.75, contrast doubled, clipped
    assert out.dtype == torch.uint8 and out.flatten().tolist() == [0, 61, 255, 255]
    out = light.transform(img.float() / 255, {'b': 0.5, 'c': 1.0})
    assert out.min() >= 0.5 and out.max() == 1.0
    mask = tv_tensors.Mask(torch.ones(1, 2, 2, dtype=torch.uint8))
    assert torch.equal(light((img, mask))[1], mask)


def test_custom_callables_and_v2_transforms_run_on_train_only():
    def invert(sample):
        return v2.functional.invert(sample)
    arr = gradient(16, 16)
    trn, val = tfms_from_stats(imagenet_stats, 16, aug_tfms=[invert, v2.RandomHorizontalFlip(1.0)])
    np.testing.assert_allclose(trn.denorm(trn(Image.fromarray(arr))) * 255,
                               255 - arr[:, ::-1].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(val.denorm(val(Image.fromarray(arr))) * 255, arr, atol=1e-3)


def test_augmentation_lists():
    assert [type(t) for t in transforms_side_on] == [RandomRotate, RandomLighting, RandomFlip]
    assert transforms_top_down[:2] == transforms_basic
    assert isinstance(transforms_top_down[2], RandomDihedral)
    assert CropType.GOOGLENET is CropType.RANDOM_RESIZED


# -------------------------------------------------------------------------------------- reprs

def test_repr_is_a_deterministic_cache_key():
    def make(**kw):
        args = dict(aug_tfms=transforms_side_on, max_zoom=1.1) | kw
        return repr(tfms_from_model(torchvision.models.resnet34, 224, **args)[0])
    base = make()
    assert base == make() == make(aug_tfms=list(transforms_side_on))
    assert 'sz=224' in base and 'RandomRotate(deg=10.0, p=0.75)' in base and '0.229' in base
    variants = [make(max_zoom=1.2), make(aug_tfms=transforms_top_down), make(pad=4),
                make(crop_type=CropType.CENTER), make(tfm_y=TfmType.CLASS),
                repr(tfms_from_model(torchvision.models.resnet34, 192)[0]),
                repr(tfms_from_stats(inception_stats, 224, transforms_side_on, 1.1)[0])]
    assert len({base, *variants}) == 1 + len(variants)
    assert make(crop_type=CropType.GOOGLENET) == make(crop_type=CropType.RANDOM_RESIZED)


    class Keep:  # a callable with object's default repr, which holds an address
        def __init__(self, amount):
            self.amount = amount

        def __call__(self, sample):
            return sample
    odd = repr(tfms_from_stats(imagenet_stats, 8, aug_tfms=[lambda s: s, Keep(3)])[0])
    assert '0x' not in odd and '<lambda>' in odd and 'Keep(amount=3)' in odd
    assert odd != repr(tfms_from_stats(imagenet_stats, 8, aug_tfms=[lambda s: s, Keep(4)])[0])


def test_valid_repr_ignores_augmentation():
    a = tfms_from_stats(imagenet_stats, 64, aug_tfms=transforms_side_on, max_zoom=1.1)[1]
    b = tfms_from_stats(imagenet_stats, 64, crop_type=CropType.RANDOM_RESIZED)[1]
    assert repr(a) == repr(b) and a.crop_type is CropType.CENTER and not a.is_train


# ------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize('kwargs, exc, match', [
    (dict(sz=0), ValueError, r'sz must be a positive int; got 0\. Pass e\.g\. sz=224'),
    (dict(sz=22.5), ValueError, r'sz must be a positive int; got 22.5'),
    (dict(crop_type='random'), TypeError, r"crop_type must be a CropType; got 'random'"),
    (dict(tfm_y=2), TypeError, r'tfm_y must be a TfmType; got 2'),
    (dict(max_zoom=0.9), ValueError, r'max_zoom must be a number in \[1, 10\]; got 0.9'),
    (dict(pad=-1), ValueError, r'pad must be an int >= 0; got -1'),
    (dict(aug_tfms=[RandomFlip(), 3]), TypeError,
     r'aug_tfms\[1\] must be a v2 transform.*got int 3'),
    (dict(sz_y=64), ValueError, r'sz_y sizes a PIXEL or CLASS target, but tfm_y is .*NO'),
    (dict(stats=((0.5, 0.5), (0.2,))), ValueError, r'stats must be \(mean, std\)'),
])
def test_bad_arguments_name_the_rule_and_the_value(kwargs, exc, match):
    args = dict(stats=imagenet_stats, sz=32) | kwargs
    with pytest.raises(exc, match=match):
        tfms_from_stats(**args)


def test_other_errors():
    with pytest.raises(ValueError, match=r'deg must be a number in \[0, 180\]; got -5'):
        RandomRotate(-5)
    with pytest.raises(ValueError, match='apply to training only'):
        Transforms(32, is_train=False, max_zoom=1.1)
    with pytest.raises(TypeError, match='im must be a PIL image .*got str'):
        tfms_from_stats(imagenet_stats, 8)[0]('cat.jpg')
    with pytest.raises(ValueError, match=r'denorm needs a CHW or NCHW array with 3 channels; '
                                         r'got shape \(4, 4\)'):
        tfms_from_stats(imagenet_stats, 8)[0].denorm(np.zeros((4, 4)))


def test_same_seed_same_draw_and_pickles_for_spawned_workers():
    import pickle
    im, mask = quadrant(40)
    trn, _ = tfms_from_stats(imagenet_stats, 24, aug_tfms=transforms_top_down, max_zoom=1.2,
                             tfm_y=TfmType.CLASS)
    copy = pickle.loads(pickle.dumps(trn))
    torch.manual_seed(1)
    x1, m1 = trn(im, mask)
    torch.manual_seed(1)
    x2, m2 = copy(im, mask)
    assert repr(copy) == repr(trn) and torch.equal(x1, x2) and torch.equal(m1, m2)
