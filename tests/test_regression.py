"""Image regression with points: flat losses, targets scaled for the loss and predictions in
pixels, TTA that undoes each augmentation, set_data at another size, the plot."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastlearn.conv_learner import (ConvLearner, CropType, ImageFileList, L1LossFlat, MSELossFlat,
                                    TfmType, tfms_from_stats)
from fastlearn.core import to_np
from fastlearn.regression import (PointPixels, ScaledPointLoss, mean_distance, plot_points,
                                  points_size)
from fastlearn.targets import scale_coords, unscale_coords
from fastlearn.transforms import RandomFlip, RandomRotateZoom

H, W = 48, 64
STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_flat_losses_golden():
    out, y = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[[1.5, 2.0]], [[3.0, 3.0]]])
    assert MSELossFlat()(out, y).item() == pytest.approx((0.25 + 4) / 4)
    assert L1LossFlat()(out, y).item() == pytest.approx((0.5 + 2) / 4)
    assert MSELossFlat()(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 4.0])).item() == 2.0


def test_point_scaling_round_trips_and_the_loss_sees_scaled_targets():
    pts = np.float32([[[0, 0]], [[24, 32]], [[48, 64]], [[12.5, 60.25]]])
    scaled = scale_coords(pts, (H, W))
    np.testing.assert_allclose(scaled[:3, 0], [[-1, -1], [0, 0], [1, 1]])
    np.testing.assert_allclose(unscale_coords(scaled, (H, W)), pts, atol=1e-5)
    out = torch.tensor(scaled.reshape(4, 2))
    # the activation gives the same pixels back, shaped (N, n, 2)
    np.testing.assert_allclose(PointPixels((H, W))(out).numpy(), pts, atol=1e-5)
    crit = ScaledPointLoss(MSELossFlat(), (H, W))
    assert crit(out, torch.tensor(pts)).item() == pytest.approx(0, abs=1e-10)
    moved = out + torch.tensor([0.1, -0.2])
    assert crit(moved, torch.tensor(pts)).item() == pytest.approx((0.01 + 0.04) / 2)


def test_mean_distance_golden_and_errors():
    assert mean_distance(np.float32([[[0, 0]], [[3, 4]]]), np.float32([[[3, 4]], [[3, 4]]])) == 2.5
    with pytest.raises(ValueError, match=r'\(2, 1, 2\).*\(1, 1, 2\)'):
        mean_distance(np.zeros((2, 1, 2)), np.zeros((1, 1, 2)))


def blob_folder(root, n=16, seed=0):
    """`root/images/<i>.png`: black HxW images with a 6x6 white square, and `root/pts.csv`
    with the square's centre as 'y x' (continuous pixels)."""
    rng = np.random.default_rng(seed)
    (root / 'images').mkdir(parents=True)
    lines = ['image,point']
    for i in range(n):
        r, c = int(rng.integers(12, H - 18)), int(rng.integers(12, W - 18))
        a = np.zeros((H, W, 3), np.uint8)
        a[r:r + 6, c:c + 6] = 255
        Image.fromarray(a).save(root / 'images' / f'{i:02d}.png')
        lines.append(f'{i:02d}.png,{r + 3} {c + 3}')
    (root / 'pts.csv').write_text('\n'.join(lines) + '\n')
    return root


def blob_data(root, aug=None, size=(H, W), max_zoom=None):
    tfms = tfms_from_stats(STATS, size, aug_tfms=aug, max_zoom=max_zoom, crop_type=CropType.NO,
                           tfm_y=TfmType.COORD)
    return (ImageFileList.from_csv(root, 'pts.csv', folder='images').label_from_csv(points=True)
            .split_by_idx(list(range(12, 16))).transform(tfms, tfm_y=True)
            .databunch(bs=4, num_workers=0))


class Centroid(nn.Module):
    """A 'model' that finds the bright square: the brightness-weighted mean position, in [-1, 1]
    coordinates. It moves with the image under any flip, rotation or zoom."""

    def forward(self, x):
        w = x.mean(1).clamp(min=0) ** 4  # the square (normalised 1), not the black (-1)
        h, wd = x.shape[-2:]
        rows = (torch.arange(h, dtype=x.dtype) + 0.5).view(1, -1, 1)
        cols = (torch.arange(wd, dtype=x.dtype) + 0.5).view(1, 1, -1)
        tot = w.sum((1, 2))
        cy, cx = (w * rows).sum((1, 2)) / tot, (w * cols).sum((1, 2)) / tot
        return torch.stack([cy / (h / 2) - 1, cx / (wd / 2) - 1], 1)


def centroid_learner(data):
    return ConvLearner.from_model_data(nn.Sequential(Centroid()), data, device='cpu', quiet=True)


def test_points_learner_predicts_pixels(tmp_path):
    data = blob_data(blob_folder(tmp_path / 'b'))
    assert points_size(data) == (H, W) and data.c == 2
    learn = centroid_learner(data)
    assert isinstance(learn.crit, ScaledPointLoss) and isinstance(learn.crit.loss, MSELossFlat)
    preds, y = learn.predict_with_targs()
    assert preds.shape == y.shape == (4, 1, 2)
    assert mean_distance(preds, y) < 0.01  # the centroid is the square's centre, in pixels
    # the loss compares scaled coordinates: a shift of 4.8 px in y is 0.2 of the half height
    x, y = next(iter(data.val_dl))
    out = learn.model(x)
    assert learn.crit(out, y).item() == pytest.approx(0, abs=1e-5)
    assert learn.crit(out, y + torch.tensor([4.8, 0.0])).item() == pytest.approx(0.04 / 2, rel=1e-3)


def test_a_crit_given_for_points_is_applied_to_scaled_targets(tmp_path):
    data = blob_data(blob_folder(tmp_path / 'b'))
    learn = ConvLearner.from_model_data(nn.Sequential(Centroid()), data, crit=L1LossFlat(),
                                        device='cpu', quiet=True)
    assert isinstance(learn.crit, ScaledPointLoss) and isinstance(learn.crit.loss, L1LossFlat)
    x, y = next(iter(data.val_dl))
    out = learn.model(x) + 0.5
    assert learn.crit(out, y).item() == pytest.approx(0.5, abs=1e-3)


def test_tta_undoes_a_flip(tmp_path):
    data = blob_data(blob_folder(tmp_path / 'b'), aug=[RandomFlip(p=1.0)])
    learn = centroid_learner(data)
    preds, y = learn.TTA(n_aug=2)
    assert preds.shape == (3, 4, 1, 2) and y.shape == (4, 1, 2)
    # the flipped passes, undone, land on the plain prediction (and on the truth)
    np.testing.assert_allclose(preds[1], preds[0], atol=1e-3)
    np.testing.assert_allclose(preds[2], preds[0], atol=1e-3)
    assert mean_distance(preds.mean(0), y) < 0.01
    # what undoing did: the raw flipped prediction is mirrored, x -> W - x
    x, _ = next(iter(data.aug_dl))
    raw = learn.predict_array(x)
    np.testing.assert_allclose(raw[:, 0, 1], W - preds[0][:, 0, 1], atol=1e-3)
    assert np.abs(raw[:, 0, 1] - preds[0][:, 0, 1]).max() > 3


def test_tta_undoes_rotation_and_zoom(tmp_path):
    data = blob_data(blob_folder(tmp_path / 'b'), aug=[RandomRotateZoom(20, 1.3, 0.1)],
                     max_zoom=1.2)
    learn = centroid_learner(data)
    preds, y = learn.TTA(n_aug=3)
    plain = preds[0]
    _, moved = next(iter(data.aug_dl))  # the augmentation does move the points
    assert mean_distance(moved, y) > 1.5
    for k in (1, 2, 3):
        assert mean_distance(preds[k], plain) < 0.6  # back in place, up to resampling


def test_set_data_rescales_points(tmp_path):
    root = blob_folder(tmp_path / 'b')
    learn = centroid_learner(blob_data(root))
    half = blob_data(root, size=(H // 2, W // 2))
    p_full = learn.predict()
    learn.set_data(half)
    assert learn.crit.size == learn.activation.size == (H // 2, W // 2)
    preds, y = learn.predict_with_targs()
    np.testing.assert_allclose(y, half.val_y / 2, atol=1e-5)  # targets in the new pixels
    assert mean_distance(preds * 2, p_full) < 0.3  # same points, half the pixels


def test_tta_test_set_is_refused(tmp_path):
    learn = centroid_learner(blob_data(blob_folder(tmp_path / 'b')))
    with pytest.raises(ValueError, match='test set has no points'):
        learn.TTA(is_test=True)


def test_plot_points(tmp_path):
    learn = centroid_learner(blob_data(blob_folder(tmp_path / 'b')))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fig = plot_points(learn, 4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ['0.0 px'] * 4


def test_a_precomputed_head_trains_on_the_points_the_images_get(tmp_path, tiny_arch):
    data = blob_data(blob_folder(tmp_path / 'b'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = ConvLearner.pretrained(tiny_arch, data, precompute=True, device='cpu', quiet=True,
                                       tmp_name=str(tmp_path / 'tmp'))
    cached_preds, cached_y = learn.predict_with_targs()
    learn.precompute = False
    preds, y = learn.predict_with_targs()
    np.testing.assert_allclose(cached_y, y, atol=1e-5)  # pixels at data.sz, not the files' raw y
    np.testing.assert_allclose(cached_preds, preds, atol=1e-3)
    learn.precompute = True
    _, trn_dl, _ = learn._training_setup()  # the head's training batches: the same targets
    fixed = np.concatenate([to_np(yb) for _, yb in data.fix_dl])
    np.testing.assert_allclose(trn_dl.y.numpy(), fixed, atol=1e-5)
    assert np.isfinite(learn.fit(1e-3, 1)[0])


def test_soft_argmax_finds_the_peak_and_the_head_shape():
    from fastlearn.regression import SoftArgmax, point_head
    m = torch.full((1, 2, 4, 8), -50.0)
    m[0, 0, 1, 6] = 50.0  # point 0 at cell (1, 6): centre (1.5/4, 6.5/8) -> (-0.25, 0.625)
    m[0, 1, 3, 0] = 50.0  # point 1 at cell (3, 0): (0.75, -0.875)
    np.testing.assert_allclose(SoftArgmax()(m).numpy(), [[-0.25, 0.625, 0.75, -0.875]], atol=1e-6)
    flat = SoftArgmax()(torch.zeros(3, 1, 5, 7))  # a flat map: the centre
    np.testing.assert_allclose(flat.numpy(), 0, atol=1e-6)
    assert point_head(32, n_points=2)(torch.randn(4, 32, 6, 8)).shape == (4, 4)
