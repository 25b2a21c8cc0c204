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
from fastlearn.archs import Arch
from fastlearn.export import FORMAT, FORMAT_TORCH, Predictor, _read
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
    with pytest.raises(ValueError, match=r'evil\.pth holds pickled Python objects.*never unpickles') as e:
        load_learner(tmp_path / 'evil.pth')
    assert 'weights_only' not in str(e.value)   # never suggest unpickling a stranger's file
    (tmp_path / 'plain.pkl').write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match=r'plain\.pkl holds pickled Python objects'):
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


# ---- damaged, altered and unloadable exports ------------------------------------------------

def test_a_truncated_export_is_called_truncated(trained, tmp_path):
    good = trained.export(tmp_path / 'm.pth').read_bytes()
    for name, data in (('half.pth', good[:len(good) // 2]), ('empty.pth', b'')):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf'{name} is (truncated or damaged|empty \(0 bytes\))'
                                             r'.*learn\.export\(fname\)') as e:
            load_learner(tmp_path / name)
        assert 'weights_only' not in str(e.value) and 'only tensors' not in str(e.value)
    (tmp_path / 'notes.pth').write_bytes(b'some text\n')
    with pytest.raises(ValueError, match=r'notes\.pth is not a safetensors or PyTorch file'):
        load_learner(tmp_path / 'notes.pth')


def _altered(trained, tmp_path, **changes):
    """The export with `changes`, written in the first format (torch.save of one dict), which
    load_learner still reads."""
    meta = _read(trained.export(tmp_path / 'm.pth'))
    meta.update(changes, format=FORMAT_TORCH)
    torch.save(meta, tmp_path / 'altered.pth')
    return tmp_path / 'altered.pth'


def test_an_export_is_a_safetensors_file_other_tools_read(trained, tmp_path):
    import json

    from safetensors import safe_open
    path = trained.export(tmp_path / 'm.pth')
    with safe_open(str(path), framework='pt') as f:
        header = f.metadata()
        names = set(f.keys())
    assert header['format'] == FORMAT == 'fastlearn-export-2'
    values = json.loads(header['fastlearn'])
    assert values['classes'] == ['ants', 'bees'] and values['c'] == 2
    assert names == set(trained.model.state_dict())


def test_learn_load_of_an_export_points_to_load_learner(trained, tmp_path):
    path = trained.export(tmp_path / 'm.pth')
    with pytest.raises(ValueError, match=r'm\.pth is a file from learn\.export\(\); open it with load_learner'):
        trained.load(path)


def test_an_export_of_the_first_format_still_loads(trained, tmp_path):
    files = [trained.data.val_ds.root / f for f in trained.data.val_ds.fnames[:3]]
    new = load_learner(trained.export(tmp_path / 'm.pth'), device='cpu')
    old = load_learner(_altered(trained, tmp_path), device='cpu')
    np.testing.assert_allclose(old.predict(files), new.predict(files), atol=1e-6)


def test_an_export_with_another_class_count_is_refused_on_load(trained, tmp_path):
    with pytest.raises(ValueError, match=r'altered\.pth does not fit this model: shapes differ.*'
                                         r'head\.\S+: \[2, \d+\] in the file, \[3, \d+\] in the model'):
        load_learner(_altered(trained, tmp_path, c=3, classes=['ants', 'bees', 'cats']))


def test_an_export_whose_class_list_was_altered_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match=r'altered\.pth is a damaged or altered export: it lists 3 '
                                         r'classes but predicts 2 outputs'):
        load_learner(_altered(trained, tmp_path, classes=['ants', 'bees', 'cats']))
    with pytest.raises(ValueError, match=r"field\(s\) \['classes'\] are missing or of the wrong type"):
        load_learner(_altered(trained, tmp_path, classes='ants'))


def test_an_export_with_another_architecture_is_refused_on_load(trained, tmp_path, tiny_arch):
    from fastlearn.archs import ARCHS, register_arch
    register_arch(Arch('wider', lambda: TinyNetWide(), cut=3, stats=tiny_arch.stats))
    try:
        with pytest.raises(ValueError, match=r'altered\.pth does not fit this model: shapes differ '
                                             r'for \d+ layer\(s\): body\.block1\.0\.weight: '
                                             r'\[8, 3, 3, 3\] in the file, \[16, 3, 3, 3\] in the model.*'
                                             r'export the learner again'):
            load_learner(_altered(trained, tmp_path, arch='wider'))
        with pytest.raises(ValueError, match=r"needs the architecture 'nosuch'.*register_arch"):
            load_learner(_altered(trained, tmp_path, arch='nosuch'))
    finally:
        ARCHS.pop('wider', None)


class TinyNetWide(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block3 = nn.Sequential(nn.Conv2d(16, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 10)


class MyNet(nn.Module):
    """A user's own network, passed to ConvLearner.pretrained with cut=."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)


def test_a_user_module_is_refused_at_export_until_registered(get_data, tmp_path):
    from fastlearn.archs import ARCHS, register_arch
    learn = ConvLearner.pretrained(MyNet(), get_data(), cut=1, device='cpu', quiet=True)
    learn.fit(1e-2, 1)
    with pytest.raises(ValueError, match=r"cannot export to .*m\.pth: load_learner rebuilds the model "
                                         r"from its architecture name 'MyNet'.*register_arch\(Arch\("
                                         r"'MyNet', MyNet, cut=\.\.\.\)\)"):
        learn.export(tmp_path / 'out' / 'm.pth')
    assert not (tmp_path / 'out').exists()                 # nothing written
    register_arch(Arch('MyNet', MyNet, cut=1))             # the fix the message gives
    try:
        learn = ConvLearner.pretrained('MyNet', learn.data, pretrained=False, device='cpu',
                                       quiet=True)
        model = load_learner(learn.export(tmp_path / 'out' / 'm.pth'), device='cpu')
        np.testing.assert_allclose(model.predict(valid_files(learn)), np.exp(learn.predict()),
                                   atol=1e-5)
    finally:
        ARCHS.pop('MyNet', None)


def test_a_non_square_size_survives_the_round_trip(get_data, get_learner, tmp_path):
    learn = get_learner(get_data(sz=(24, 32)))
    learn.fit(1e-2, 1)
    model = load_learner(learn.export(tmp_path / 'm.pth'), device='cpu')
    assert model.tfms.sz == (24, 32) and 'sz (24, 32)' in repr(model)
    np.testing.assert_allclose(model.predict(valid_files(learn)), np.exp(learn.predict()), atol=1e-5)


def test_an_export_whose_header_length_starts_like_a_pickle_still_loads(trained, tmp_path):
    # a safetensors file starts with its header length, little-endian: one export in 256 starts 0x80
    from fastlearn.export import _write
    meta = _read(trained.export(tmp_path / 'm.pth'))
    path = tmp_path / 'odd.pth'
    for pad in range(256):
        _write({**meta, 'note': 'x' * pad}, path)
        if path.read_bytes()[:1] == b'\x80':
            break
    assert path.read_bytes()[:1] == b'\x80'
    np.testing.assert_allclose(load_learner(path, device='cpu').predict(valid_files(trained)),
                               np.exp(trained.predict()), atol=1e-5)
