"""export / load_learner: a round trip predicts what the learner predicts, and anything that is
not an export is refused with a message that says what to do."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from conftest import CLASS_COLOURS, noise_image
from fastlearn.conv_learner import ConvLearner, ImageClassifierData, load_learner, tfms_from_model
from fastlearn.export import FORMAT, Predictor
from test_learner import _one_thread, get_data, get_learner  # noqa: F401 (fixtures)


@pytest.fixture
def trained(get_data, get_learner):
    learn = get_learner(get_data())
    learn.fit(1e-2, 2)
    return learn


def valid_files(learn) -> list:
    ds = learn.data.val_ds
    return [ds.root / f for f in ds.fnames]


@pytest.mark.parametrize('precompute', [False, True])
def test_round_trip_predicts_the_learners_probabilities(get_data, get_learner, tmp_path, precompute):
    learn = get_learner(get_data(), precompute=precompute)
    learn.fit(1e-2, 2)
    path = learn.export(tmp_path / 'model.pth')
    assert path == tmp_path / 'model.pth' and not list(tmp_path.glob('*.part'))
    model = load_learner(path, device='cpu')
    assert isinstance(model, Predictor) and model.classes == ['ants', 'bees']
    probs = model.predict(valid_files(learn))
    np.testing.assert_allclose(probs, np.exp(learn.predict()), atol=1e-5)
    cls, p = model.predict_image(valid_files(learn)[-1])
    assert cls == model.classes[int(probs[-1].argmax())] and p == pytest.approx(probs[-1].max())
    assert 'Predictor(tiny, sz 32' in repr(model)


def test_a_learn_save_file_is_refused(trained):
    path = trained.save('weights')
    with pytest.raises(ValueError, match=rf"is not a fastlearn export \(no '{FORMAT}' marker\).*"
                                         r"learn\.load\(name\)"):
        load_learner(path)


class Payload:
    """Anything pickled: `weights_only` loading refuses to build it."""


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_a_pickled_object_is_refused(tmp_path):
    torch.save({'format': FORMAT, 'obj': Payload()}, tmp_path / 'evil.pth')
    with pytest.raises(ValueError, match='is not a fastlearn export'):
        load_learner(tmp_path / 'evil.pth')
    (tmp_path / 'plain.pkl').write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match='is not a fastlearn export'):
        load_learner(tmp_path / 'plain.pkl')


def test_a_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no exported model at .*learn\.export'):
        load_learner(tmp_path / 'nothing.pth')


def test_custom_head_cannot_be_exported(get_data, tiny_arch, tmp_path):
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2))
    learn = ConvLearner.pretrained(tiny_arch, get_data(), custom_head=head, device='cpu', quiet=True)
    learn.fit(1e-2, 1)
    with pytest.raises(ValueError, match='export needs the standard head; with custom_head'):
        learn.export(tmp_path / 'm.pth')
    assert not (tmp_path / 'm.pth').exists()


def test_head_options_survive_the_round_trip(get_data, get_learner, tmp_path):
    learn = get_learner(get_data(), ps=0.1, xtra_fc=[16, 8])
    learn.fit(1e-2, 1)
    model = load_learner(learn.export(tmp_path / 'm.pth'), device='cpu')
    np.testing.assert_allclose(model.predict(valid_files(learn)), np.exp(learn.predict()), atol=1e-5)


def test_regression_export_has_no_classes(tmp_path, tiny_arch, get_learner):
    rng = np.random.default_rng(0)
    (tmp_path / 'train').mkdir()
    lines = ['id,value']
    for i in range(12):
        noise_image(CLASS_COLOURS['ants'], 32, rng).save(tmp_path / 'train' / f'{i}.png')
        lines.append(f'{i},{i / 10}')
    (tmp_path / 'values.csv').write_text('\n'.join(lines) + '\n')
    data = ImageClassifierData.from_csv(tmp_path, 'train', tmp_path / 'values.csv', bs=4,
                                        suffix='.png', continuous=True, num_workers=0,
                                        val_idxs=[0, 1, 2, 3], tfms=tfms_from_model(tiny_arch, 32))
    learn = get_learner(data)
    learn.fit(1e-2, 1)
    model = load_learner(learn.export(tmp_path / 'reg.pth'), device='cpu')
    files = [data.val_ds.root / f for f in data.val_ds.fnames]
    np.testing.assert_allclose(model.predict(files), learn.predict(), atol=1e-5)
    assert model.classes == [] and model.predict([]).shape == (0, 1)
    with pytest.raises(ValueError, match=r'use model\.predict\(\[image\]\)'):
        model.predict_image(files[0])


def test_a_non_square_size_survives_the_round_trip(get_data, get_learner, tmp_path):
    learn = get_learner(get_data(sz=(24, 32)))
    learn.fit(1e-2, 1)
    model = load_learner(learn.export(tmp_path / 'm.pth'), device='cpu')
    assert model.tfms.sz == (24, 32) and 'sz (24, 32)' in repr(model)
    np.testing.assert_allclose(model.predict(valid_files(learn)), np.exp(learn.predict()), atol=1e-5)
