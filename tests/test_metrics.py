"""Metrics: golden values with numpy arrays and tensors, names for the epoch table, errors."""
import numpy as np
import pytest
import torch

from fastlearn.metrics import (accuracy, accuracy_multi, accuracy_np, accuracy_thresh, error_rate,
                               f2, fbeta, opt_th, precision, recall)

# 4 rows, 3 classes: argmax = [0, 1, 2, 1]; targets [0, 1, 1, 1] -> 3 of 4 right
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
TARGS = np.array([0, 1, 1, 1])

# multi-label: 3 rows, 4 labels
ML_PROBS = np.array([[0.9, 0.1, 0.6, 0.2], [0.3, 0.8, 0.4, 0.7], [0.6, 0.2, 0.1, 0.9]])
ML_TARGS = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 1]])
# at 0.5: preds [[1,0,1,0],[0,1,0,1],[1,0,0,1]] -> 10 of 12 cells right;
# tp = 5, fp = 1, fn = 1 -> precision = recall = 5/6


@pytest.mark.parametrize('to', [np.asarray, torch.tensor])
def test_accuracy_golden(to):
    assert accuracy(to(PROBS), to(TARGS)) == 0.75
    assert type(accuracy(to(PROBS), to(TARGS))) is float
    assert error_rate(to(PROBS), to(TARGS)) == 0.25


def test_accuracy_log_probs_same_as_probs():
    assert accuracy(np.log(PROBS), TARGS) == accuracy(PROBS, TARGS)
    assert accuracy(torch.log_softmax(torch.tensor(PROBS), 1), torch.tensor(TARGS)) == 0.75


def test_accuracy_np_and_mixed_inputs():
    assert accuracy_np(PROBS, TARGS) == 0.75
    assert accuracy(torch.tensor(PROBS, dtype=torch.float16), TARGS) == 0.75  # half, numpy targs


def test_accuracy_mismatched_lengths_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(3,\)'):
        accuracy(PROBS, TARGS[:3])
    with pytest.raises(ValueError, match=r'multi-label: use accuracy_thresh'):
        accuracy(ML_PROBS, ML_TARGS)
    with pytest.raises(ValueError, match='no predictions'):
        accuracy(np.zeros((0, 3)), np.zeros(0))


@pytest.mark.parametrize('to', [np.asarray, torch.tensor])
def test_accuracy_multi_and_thresh_golden(to):
    assert accuracy_multi(to(ML_PROBS), to(ML_TARGS)) == pytest.approx(10 / 12)
    # at 0.15 only the two 0.1 cells (both targets 0) are negative: 6 positives + 2 negatives right
    assert accuracy_thresh(0.15)(to(ML_PROBS), to(ML_TARGS)) == pytest.approx(8 / 12)
    assert accuracy_thresh()(to(ML_PROBS), to(ML_TARGS)) == pytest.approx(10 / 12)


def test_accuracy_multi_sigmoid_for_logits():
    logits = np.log(ML_PROBS / (1 - ML_PROBS))
    assert accuracy_multi(logits, ML_TARGS, sigmoid=True) == pytest.approx(10 / 12)


def test_accuracy_multi_shape_mismatch():
    with pytest.raises(ValueError, match=r'\(3, 4\).*\(3, 3\)'):
        accuracy_multi(ML_PROBS, ML_TARGS[:, :3])


def test_names_for_the_epoch_table():
    assert accuracy.__name__ == 'accuracy'
    assert error_rate.__name__ == 'error_rate'
    assert accuracy_thresh().__name__ == 'accuracy_thresh'
    assert accuracy_thresh(0.2).__name__ == 'accuracy_thresh(0.2)'
    assert f2.__name__ == 'f2' and fbeta.__name__ == 'fbeta'
    assert precision.__name__ == 'precision' and recall.__name__ == 'recall'


@pytest.mark.parametrize('to', [np.asarray, torch.tensor])
def test_multilabel_precision_recall_micro_fbeta_per_image(to):
    p, t = to(ML_PROBS), to(ML_TARGS)
    assert precision(p, t) == pytest.approx(5 / 6)
    assert recall(p, t) == pytest.approx(5 / 6)
    assert fbeta(p, t, beta=1, average='micro') == pytest.approx(5 / 6)
    # per image at 0.5: F1 = 2/3 (P 1/2, R 1), 4/5 (P 1, R 2/3), 1 -> mean 0.8222
    assert fbeta(p, t, beta=1) == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)


def test_fbeta_weighs_recall():
    # predict everything positive: per image P = 1/4, 3/4, 2/4 and R = 1
    p = np.ones_like(ML_PROBS)
    per_image = [5 * pr / (4 * pr + 1) for pr in (1 / 4, 3 / 4, 2 / 4)]
    assert fbeta(p, ML_TARGS, beta=2) == pytest.approx(np.mean(per_image))
    assert f2(p, ML_TARGS) == pytest.approx(np.mean(per_image))  # every threshold: all positive
    assert fbeta(p, ML_TARGS, beta=1, average='micro') == pytest.approx(2 * 0.5 / 1.5)


def _f2_by_hand(p, t, th):
    scores = []
    for pr, tr in zip(p > th, t.astype(bool)):
        tp = (pr & tr).sum()
        prec, rec = (tp / pr.sum() if pr.sum() else 0), (tp / tr.sum() if tr.sum() else 0)
        scores.append(5 * prec * rec / (4 * prec + rec) if tp else 0)
    return np.mean(scores)


def test_f2_and_opt_th_are_the_course_planet_helpers():
    # 40 images, 6 labels: the best threshold lies inside 0.17..0.23, away from 0.5
    rng = np.random.default_rng(0)
    t = (rng.random((40, 6)) < 0.3).astype(np.float32)
    p = np.clip(t * 0.3 + rng.random((40, 6)) * 0.25, 0, 1)
    ths = np.arange(0.17, 0.24, 0.01)
    by_hand = [_f2_by_hand(p, t, th) for th in ths]
    assert f2(p, t) == pytest.approx(max(by_hand))
    assert opt_th(p, t) == pytest.approx(ths[int(np.argmax(by_hand))])
    assert f2(p, t) > fbeta(p, t, beta=2) + 0.1  # 0.5 misses most positives here
    assert f2(torch.tensor(p), torch.tensor(t)) == pytest.approx(f2(p, t))
    assert f2(p, t, start=0.5, end=0.51) == pytest.approx(fbeta(p, t, beta=2, thresh=0.5))
    with pytest.raises(ValueError, match='multi-label'):
        opt_th(PROBS, TARGS)
    with pytest.raises(ValueError, match='no thresholds'):
        f2(p, t, start=0.3, end=0.2)


def test_single_label_binary_and_multiclass_averages():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    targs = np.array([0, 1, 0, 1])  # preds [0,1,1,0]: tp=1, fp=1, fn=1 for class 1
    assert precision(probs, targs) == pytest.approx(0.5)
    assert recall(probs, targs) == pytest.approx(0.5)
    assert fbeta(probs, targs, beta=1) == pytest.approx(0.5)
    # three classes, macro: recall of class 0 is 1/1, class 1 2/3, class 2 (never a target) 0
    assert recall(PROBS, TARGS) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_fbeta_rejects_bad_beta():
    with pytest.raises(ValueError, match='beta must be > 0'):
        fbeta(ML_PROBS, ML_TARGS, beta=0)
