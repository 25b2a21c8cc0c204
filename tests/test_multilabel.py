"""Multi-label: F2 averaged over images, per-tag thresholds, used by predict, and the per-tag
interpretation (missed and invented tags)."""
import warnings

import numpy as np
import pytest

from conftest import CLASS_COLOURS, noise_image
from fastlearn.conv_learner import ConvLearner, ImageClassifierData, fbeta, load_learner, opt_th, tfms_from_model
from fastlearn.export import Predictor, _read, _write
from fastlearn.multilabel import (TagInterpretation, as_thresholds, f2_samples, fbeta_samples,
                                  opt_thresholds, tags_above)

# 4 images, 3 tags
PROBS = np.array([[0.9, 0.30, 0.05], [0.8, 0.15, 0.6], [0.1, 0.25, 0.7], [0.6, 0.12, 0.1]])
TARGS = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0]])


def test_f2_samples_golden_and_equal_to_sklearn():
    # at 0.2: preds [[1,1,0],[1,0,1],[0,1,1],[1,0,0]]: three images exact, the last has
    # tp 1, fn 1 -> F2 = 5 / (5 + 4) = 5/9; mean (3 + 5/9) / 4
    assert f2_samples(PROBS, TARGS, 0.2) == pytest.approx((3 + 5 / 9) / 4)
    rng = np.random.default_rng(0)
    p, t = rng.random((50, 6)), rng.random((50, 6)) < 0.4
    for th in (0.1, 0.3, 0.5, 0.95):
        for beta in (1, 2):
            assert fbeta_samples(p, t, th, beta) == pytest.approx(fbeta(p, t, beta, th), abs=1e-12)


def test_f2_samples_image_with_nothing_true_nor_predicted_scores_zero_as_sklearn():
    p, t = np.array([[0.1, 0.1], [0.9, 0.1]]), np.array([[0, 0], [1, 0]])
    assert f2_samples(p, t, 0.5) == 0.5 == pytest.approx(fbeta(p, t, 2, 0.5))


def test_opt_thresholds_beats_one_threshold_per_tag():
    # tag 1 needs a threshold in [0.10, 0.12), tag 2 one in [0.2, 0.6): no single one fits both
    p = np.array([[0.9, 0.30, 0.05], [0.8, 0.10, 0.6], [0.1, 0.25, 0.7], [0.6, 0.12, 0.1],
                  [0.7, 0.09, 0.2]])
    t = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])
    th = opt_thresholds(p, t)
    assert th.shape == (3,)
    assert th[1] == 0.10 and 0.2 <= th[2] < 0.6 and f2_samples(p, t, th) == 1.0
    best_single = max(f2_samples(p, t, v) for v in np.arange(0.02, 0.9, 0.01))
    assert best_single < 1.0
    # the course's opt_th: one threshold in [0.17, 0.24)
    assert opt_th(PROBS, TARGS) == pytest.approx(0.17)


def test_opt_thresholds_keeps_the_global_value_for_tags_that_do_not_matter():
    p, t = np.array([[0.9, 0.4], [0.2, 0.4]]), np.array([[1, 0], [0, 0]])
    th = opt_thresholds(p, t, grid=[0.1, 0.3, 0.5])
    # one threshold: 0.1 and 0.3 invent tag 1 (0.4 > t) and tag 0 on image 2; 0.5 is perfect
    np.testing.assert_allclose(th, [0.5, 0.5])


def test_threshold_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r'one per tag \(3\), got \(2,\)'):
        as_thresholds([0.1, 0.2], 3)
    with pytest.raises(ValueError, match=r'\(4, 3\) and \(4, 2\)'):
        f2_samples(PROBS, TARGS[:, :2])
    with pytest.raises(ValueError, match='grid must be'):
        opt_thresholds(PROBS, TARGS, grid=[])


def test_tags_above_per_tag_thresholds():
    tags, idx = tags_above([0.3, 0.1, 0.6], ['a', 'b', 'c'], [0.2, 0.05, 0.7])
    assert tags == ['a', 'b'] and idx.tolist() == [0, 1]
    assert tags_above([0.3, 0.1, 0.6], ['a', 'b', 'c'])[0] == ['c']


def test_interpretation_counts_missed_and_invented_tags():
    interp = TagInterpretation(PROBS, TARGS, ['Sky', 'Car', 'Pedestrian'], 0.5)
    # at 0.5: preds [[1,0,0],[1,0,1],[0,0,1],[1,0,0]]
    assert interp.missed.tolist() == [0, 3, 0] and interp.invented.tolist() == [0, 0, 0]
    rows = {r['tag']: r for r in interp.per_tag()}
    assert rows['Car'] == dict(tag='Car', threshold=0.5, true=3, predicted=0, missed=3,
                               invented=0, precision=0.0, recall=0.0)
    assert rows['Sky']['recall'] == 1.0
    interp = TagInterpretation(PROBS, TARGS, ['Sky', 'Car', 'Pedestrian'], [0.5, 0.13, 0.5])
    # Car at 0.13: image 2 (0.15) is invented, image 4 (0.12) missed
    assert interp.missed.tolist() == [0, 1, 0] and interp.invented.tolist() == [0, 1, 0]
    assert interp.most_confused() == []  # no image both misses and invents
    text = repr(interp)  # F2 per image: 1, 10/11 (one invented), 1, 5/9 (one missed)
    assert 'Car' in text and f'F2 averaged over 4 images: {(2 + 10 / 11 + 5 / 9) / 4:.4f}' in text
    assert interp.worst_images(2).tolist() == [3, 1]  # 5/9, then 10/11


def test_most_confused_pairs_a_missed_tag_with_the_invented_one():
    p = np.array([[0.9, 0.1, 0.8], [0.9, 0.2, 0.7], [0.9, 0.9, 0.1]])
    t = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0]])
    interp = TagInterpretation(p, t, ['Road', 'Pedestrian', 'Bicyclist'], 0.5)
    assert interp.most_confused() == [('Pedestrian', 'Bicyclist', 2)]


def _tag_folder(root):
    red, green, yellow = CLASS_COLOURS['ants'], CLASS_COLOURS['bees'], CLASS_COLOURS['dogs']
    kinds = [(red, 'red'), (green, 'green'), (yellow, 'red green')]
    rng = np.random.default_rng(0)
    (root / 'train').mkdir(parents=True)
    lines = ['id,label']
    for i in range(24):
        colour, label = kinds[i % 3]
        noise_image(colour, 32, rng).save(root / 'train' / f'im{i:02d}.png')
        lines.append(f'im{i:02d},{label}')
    (root / 'labels.csv').write_text('\n'.join(lines) + '\n')
    return root


def _tag_learner(tmp_path, arch) -> tuple[ConvLearner, ImageClassifierData, object]:
    root = _tag_folder(tmp_path / 'tags')
    data = ImageClassifierData.from_csv(root, 'train', root / 'labels.csv', bs=6, suffix='.png',
                                        tfms=tfms_from_model(arch, 32), num_workers=0,
                                        val_idxs=np.arange(18, 24))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return ConvLearner.pretrained(arch, data, device='cpu', quiet=True), data, root


def test_learner_thresholds_drive_predict(tmp_path, tiny_arch):
    learn, data, root = _tag_learner(tmp_path, tiny_arch)
    assert learn.thresholds is None
    f = root / 'train' / 'im00.png'
    _, _, probs = learn.predict(f)
    assert learn.predict(f)[0] == [c for c, p in zip(data.classes, probs) if p > 0.5]
    learn.thresholds = [0.0, 1.0]  # every image gets tag 0, none gets tag 1
    assert learn.predict(f)[:2][0] == [data.classes[0]]
    assert learn.thresholds.tolist() == [0.0, 1.0]
    learn.thresholds = 1.0
    assert learn.predict(f)[0] == [] and learn.thresholds.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r'one per tag \(2\)'):
        learn.thresholds = [0.1, 0.2, 0.3]
    learn.thresholds = None
    assert learn.predict(f)[0] == [c for c, p in zip(data.classes, probs) if p > 0.5]


def test_export_keeps_the_thresholds_and_predict_tags_uses_them(tmp_path, tiny_arch):
    learn, data, root = _tag_learner(tmp_path, tiny_arch)
    f = root / 'train' / 'im00.png'
    untuned = load_learner(learn.export(tmp_path / 'plain.pth'), device='cpu')
    tags, probs = untuned.predict_tags(f)
    assert untuned.thresholds is None and tags == learn.predict(f)[0]  # 0.5 for both
    np.testing.assert_allclose(probs, learn.predict(f)[2], atol=1e-6)
    learn.thresholds = [0.0, 1.0]
    model = load_learner(learn.export(tmp_path / 'tuned.pth'), device='cpu')
    assert model.thresholds.tolist() == [0.0, 1.0]
    assert model.predict_tags(f)[0] == [data.classes[0]] == learn.predict(f)[0]
    with pytest.raises(ValueError, match='predict_tags needs a multi-label model'):
        Predictor(model.model, {**_read(tmp_path / 'tuned.pth'), 'is_multi': False}).predict_tags(f)


def test_an_export_with_altered_thresholds_is_refused(tmp_path, tiny_arch):
    learn, data, root = _tag_learner(tmp_path, tiny_arch)
    meta = _read(learn.export(tmp_path / 'model.pth'))
    bad = tmp_path / 'bad.pth'
    _write({**meta, 'thresholds': [0.2, float('nan')]}, bad)
    with pytest.raises(ValueError, match=r'bad\.pth is a damaged or altered export: its thresholds'):
        load_learner(bad, device='cpu')
