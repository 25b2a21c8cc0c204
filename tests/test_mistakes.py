"""Fine-tuning a model in use on its mistakes: corrected items mixed with a replay sample,
accuracies before and after, and the guard that keeps the original model."""
import warnings

import numpy as np
import pytest
import torch

from conftest import make_image_folder, noise_image
from fastlearn.conv_learner import ConvLearner, ImageClassifierData, tfms_from_model
from fastlearn.mistakes import (MistakesReport, corrected_items, fine_tune_on_mistakes,
                               learner_from_export)


@pytest.fixture
def trained(tmp_path, tiny_arch):
    """The tiny model after 3 head epochs on ants (red) vs bees (green): 14 of 16 valid right."""
    root = make_image_folder(tmp_path / 'd', n_train=12, n_valid=8)
    data = ImageClassifierData.from_paths(root, bs=8, tfms=tfms_from_model(tiny_arch, 32),
                                          num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = ConvLearner.pretrained(tiny_arch, data, device='cpu', quiet=True)
    learn.fit(1e-2, 3)
    return learn


def corrected_folder(root, colour, label, n=6):
    """`root/<label>/<i>.png`: `n` images of a look the model has not seen, labelled `label`."""
    rng = np.random.default_rng(1)
    (root / label).mkdir(parents=True)
    for i in range(n):
        noise_image(colour, 32, rng).save(root / label / f'{i}.png')
    return root


def test_fine_tune_fixes_the_mistakes_and_keeps_validation(trained, tmp_path):
    # yellow bees: the model calls every one an ant
    folder = corrected_folder(tmp_path / 'c', (200, 200, 40), 'bees')
    report = fine_tune_on_mistakes(trained, folder, epochs=4, lrs=1e-2)
    assert isinstance(report, MistakesReport)
    assert (report.val_before, report.items_before) == (0.875, 0.0)
    assert report.items_after == 1.0 and report.val_after >= report.val_before - 0.01
    assert report.kept == 'fine-tuned' and (report.n_items, report.n_replay) == (6, 24)
    assert 'corrected items 0.0000 -> 1.0000' in str(report)
    # the learner keeps its own data afterwards
    assert len(trained.data.trn_ds) == 24 and trained.predict().shape == (16, 2)


def test_guard_keeps_the_original_model_when_validation_falls(trained, tmp_path):
    # blue bees at a high rate: learnt, but validation falls to 0.5, so the old model stays
    folder = corrected_folder(tmp_path / 'c', (40, 40, 200), 'bees')
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    report = fine_tune_on_mistakes(trained, folder, epochs=4, lrs=1e-2)
    assert report.val_after == 0.5 and report.val_before == 0.875
    assert report.kept == 'original'
    after = trained.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_items_as_a_list_with_labels(trained, tmp_path):
    folder = corrected_folder(tmp_path / 'c', (200, 200, 40), 'x', n=2)
    files = sorted(folder.glob('x/*.png'))
    names, y = corrected_items(files, ['bees', 0], trained.data.classes)
    assert y.tolist() == [1, 0] and all(n.endswith('.png') for n in names)
    report = fine_tune_on_mistakes(trained, files, ['bees', 'bees'], epochs=1, replay=3,
                                   lrs=1e-3)
    assert (report.n_items, report.n_replay, report.epochs) == (2, 3, 1)


def test_bad_input_is_named(trained, tmp_path):
    with pytest.raises(ValueError, match=r"label 'wasps' of .* is not one of the model's classes"):
        corrected_items([tmp_path / 'a.png'], ['wasps'], ['ants', 'bees'])
    with pytest.raises(ValueError, match='2 items need as many labels, got 1'):
        corrected_items(['a.png', 'b.png'], ['ants'], ['ants', 'bees'])
    with pytest.raises(FileNotFoundError, match='not found'):
        fine_tune_on_mistakes(trained, tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images in'):
        fine_tune_on_mistakes(trained, tmp_path / 'empty')


def test_an_exported_model_is_fine_tuned_on_its_data(trained, tmp_path):
    f = trained.export(tmp_path / 'm.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = learner_from_export(f, trained.data, device='cpu', quiet=True)
    np.testing.assert_allclose(learn.predict(), trained.predict(), atol=1e-5)
    folder = corrected_folder(tmp_path / 'c', (200, 200, 40), 'bees')
    report = fine_tune_on_mistakes(learn, folder, epochs=4, lrs=1e-2)
    assert report.val_before == 0.875 and report.items_after == 1.0
    with pytest.raises(ValueError, match='pass the data it was trained on'):
        learner_from_export(f, ImageClassifierData.from_paths(
            make_image_folder(tmp_path / 'o', classes=('cats', 'dogs'), n_train=2, n_valid=1),
            tfms=tfms_from_model(learn.arch_name, 32), num_workers=0))
