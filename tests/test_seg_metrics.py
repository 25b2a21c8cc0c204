"""Masks: the class axis is axis 1 for the activation, the loss and the metrics; Void counts for
nothing; golden numbers on hand-built 2x3 masks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastlearn.learner import Learner
from fastlearn.metrics import accuracy
from fastlearn.seg_metrics import (confusion, global_accuracy, iou_per_class, mean_iou,
                                   median_frequency, miou,
                                   pixel_accuracy, seg_cross_entropy)
from seg_data import make_seg_folder, seg_data

VOID = 3
# one image, 2x3 pixels; classes 0, 1, 2 and Void (3)
TRUTH = np.array([[[0, 0, 1], [2, 3, 1]]])
PRED = np.array([[[0, 1, 1], [2, 2, 3]]])
# non-Void pixels: (0,0) 0->0 ok, (0,1) 0->1, (0,2) 1->1 ok, (1,0) 2->2 ok, (1,2) 1->3 (Void)
# -> 3 of 5 right. IoU: class 0: 1/(1+0+1) = 1/2; class 1: 1/(1+1+1) = 1/3; class 2: 1/1
# (the Void prediction on Void truth at (1,1) is not counted) -> mIoU (1/2 + 1/3 + 1) / 3


def scores(labels: np.ndarray, n: int = 4) -> np.ndarray:
    """(N, C, H, W) log-probabilities whose argmax over axis 1 is `labels`."""
    onehot = np.eye(n)[labels].transpose(0, 3, 1, 2)
    return np.log(0.05 + 0.8 * onehot)


def test_golden_pixel_accuracy_and_iou():
    cm = confusion(scores(PRED), TRUTH, 4, void=VOID)
    assert cm.sum() == 5 and cm[VOID].sum() == 0 and cm[1, 3] == 1
    assert global_accuracy(cm) == pytest.approx(3 / 5)
    np.testing.assert_allclose(iou_per_class(cm)[:3], [1 / 2, 1 / 3, 1])
    assert miou(cm, void=VOID) == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert pixel_accuracy(VOID)(torch.tensor(scores(PRED)), torch.tensor(TRUTH)) == pytest.approx(3 / 5)
    assert mean_iou(4, VOID)(scores(PRED), TRUTH) == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert pixel_accuracy()(PRED, TRUTH) == pytest.approx(3 / 6)  # Void counted: (1,1) 3->2 wrong
    assert pixel_accuracy.__name__ and pixel_accuracy(VOID).__name__ == 'pixel_acc'


def test_class_absent_everywhere_is_skipped_by_miou():
    cm = confusion(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), 4, void=VOID)
    assert np.isnan(iou_per_class(cm)[1]) and miou(cm, void=VOID) == 1.0


def test_accuracy_takes_the_argmax_over_the_class_axis():
    s = scores(PRED)  # (1, 4, 2, 3): the last axis (width 3) is not the class axis
    assert accuracy(s, PRED) == 1.0
    assert accuracy(s, TRUTH) == pytest.approx(3 / 6)


def test_loss_ignores_void_pixels():
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(2, 4, 5, 6, generator=gen)
    y = torch.randint(0, 4, (2, 5, 6), generator=gen)
    y[0, 0] = VOID
    loss = seg_cross_entropy(VOID)
    keep = y != VOID
    by_hand = F.cross_entropy(out.permute(0, 2, 3, 1)[keep], y[keep])
    assert loss(out, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    out2 = out.clone()
    out2[:, :, :][(y == VOID)[:, None].expand_as(out)] = 50.0  # any scores on Void pixels
    assert loss(out2, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert loss(out, torch.full_like(y, VOID)).item() == 0.0  # Void only: 0, not NaN


def test_metric_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r'\(1, 2, 3\).*\(1, 3, 3\)'):
        pixel_accuracy(VOID)(scores(PRED), np.zeros((1, 3, 3), int))
    with pytest.raises(ValueError, match='classes on axis 1'):
        seg_cross_entropy(VOID)(torch.zeros(1, 4, 2, 3), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='0..3'):
        confusion(PRED + 2, TRUTH, 4)


def test_learner_on_masks_takes_log_softmax_over_classes(tmp_path):
    """The silent bug: the activation over the last axis (the width) gave an argmax unrelated to
    the model's outputs. Now predict() agrees with the raw outputs on every pixel."""
    data = seg_data(make_seg_folder(tmp_path / 'seg'))
    torch.manual_seed(0)
    model = nn.Conv2d(3, data.c, 1)
    learn = Learner(data, model, [model], models_name=str(tmp_path / 'm'), quiet=True)
    assert learn.crit.__name__ == 'seg_cross_entropy' and learn.crit.void == VOID
    assert [m.__name__ for m in learn.metrics] == ['pixel_acc']
    preds, y = learn.predict_with_targs()
    assert preds.shape == (4, 4, 30, 40) and y.shape == (4, 30, 40)
    np.testing.assert_allclose(np.exp(preds).sum(1), 1, atol=1e-5)  # probabilities over classes
    x = torch.cat([xb for xb, _ in data.val_dl])
    with torch.no_grad():
        raw = model.eval()(x).numpy()
    assert (preds.argmax(1) == raw.argmax(1)).all()
    loss, acc = learn.fit(0.1, 1)  # the loop's metric on the same argmax
    preds, y = learn.predict_with_targs()
    keep = y != VOID
    assert acc == pytest.approx(float((preds.argmax(1) == y)[keep].mean()), abs=0.02)


def test_weighted_loss_and_median_frequency():
    masks = [np.array([[0, 0, 0, 1]]), np.array([[0, 2, 2, 3]])]  # 3 = Void
    # class 0: 4 px in masks of 8 px -> 1/2; class 1: 1 of 4 -> 1/4; class 2: 2 of 4 -> 1/2
    w = median_frequency(masks, 4, void=VOID)
    np.testing.assert_allclose(w, [1, 2, 1, 0])
    gen = torch.Generator().manual_seed(1)
    out = torch.randn(2, 4, 1, 4, generator=gen)
    y = torch.tensor(np.stack(masks))
    keep = y != VOID
    wt = torch.tensor(w)
    per_px = F.cross_entropy(out, y, reduction='none')[keep]
    by_hand = (per_px * wt[y[keep]]).sum() / wt[y[keep]].sum()
    assert seg_cross_entropy(VOID, w)(out, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
