"""learn.save / learn.load under faults: paths to files, optimizer state for resuming, and files
that do not fit, are not tensors, or are damaged, each refused by name with the model unchanged."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from fastlearn.saving import CHECKPOINT
from test_learner import _one_thread, get_data, get_learner, learn  # noqa: F401 (fixtures)


def weights(learn) -> dict:
    return copy.deepcopy(learn.model.state_dict())


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_accepts_a_path_to_a_file(learn, get_data, get_learner, tmp_path):
    learn.fit(1e-2, 1)
    path = learn.save(tmp_path / 'abs' / 'm.pth')             # absolute, with .pth: as given
    assert path == tmp_path / 'abs' / 'm.pth' and path.is_file()
    assert learn.save('course') == learn.models_path / 'course.pth'   # the course's name
    assert learn.save('with.pth') == learn.models_path / 'with.pth'   # not with.pth.pth
    other = get_learner(get_data())
    for name in (str(path), path, str(tmp_path / 'abs' / 'm'), 'course', 'with.pth', 'with'):
        other.load(name)
        np.testing.assert_array_equal(other.predict(), learn.predict())


def test_save_with_opt_resumes_the_run(learn, get_data, get_learner):
    learn.fit(1e-2, 1, wds=1e-4)
    path = learn.save('resume', with_opt=True)
    state = torch.load(path, weights_only=True)                  # a plain tensors-only file
    assert state['format'] == CHECKPOINT and set(state) == {'format', 'model', 'opt'}
    plain = torch.load(learn.save('plain'), weights_only=True)  # a plain save stays a state dict
    assert same_weights(plain, learn.model.state_dict())
    other = get_learner(get_data())
    other.load('resume')
    assert other.layer_opt is not None and other.layer_opt.lrs == learn.layer_opt.lrs
    assert other.layer_opt.wds == pytest.approx([1e-4] * 3)
    mom = lambda lr: [v['momentum_buffer'] for v in lr.layer_opt.state_dict()['state'].values()]  # noqa: E731
    assert len(mom(other)) == len(mom(learn)) > 0
    assert all(torch.equal(a, b) for a, b in zip(mom(other), mom(learn)))
    torch.manual_seed(1)
    learn.fit(1e-2, 1)
    torch.manual_seed(1)
    other.fit(1e-2, 1)                                         # the same next epoch: resumed
    assert same_weights(weights(other), weights(learn))


def test_weights_of_another_class_count_are_refused_and_change_nothing(learn, get_learner, tmp_path):
    from conftest import make_image_folder
    from fastlearn.conv_learner import ImageClassifierData, tfms_from_model
    from fastlearn.archs import arch_for
    three = make_image_folder(tmp_path / 'three', classes=('ants', 'bees', 'cats'))
    data3 = ImageClassifierData.from_paths(three, bs=8, num_workers=0,
                                           tfms=tfms_from_model(arch_for('tiny'), 32))
    path = get_learner(data3).save('three_classes')
    before = weights(learn)
    with pytest.raises(ValueError, match=r'three_classes\.pth does not fit this model: shapes differ '
                                         r'for 2 layer\(s\): head\.\S+\.weight: \[3, \d+\] in the file, '
                                         r'\[2, \d+\] in the model.*The model is unchanged'):
        learn.load(path)
    assert same_weights(weights(learn), before)                # nothing half-loaded


def test_weights_of_another_architecture_are_refused(learn, tmp_path):
    state = {k: v for k, v in learn.model.state_dict().items() if not k.startswith('body.block3')}
    state['body.9.weight'] = torch.zeros(3)
    torch.save(state, tmp_path / 'other.pth')
    before = weights(learn)
    with pytest.raises(ValueError, match=r"layer\(s\) missing from the file: \['body\.block3\..*"
                                         r"1 layer\(s\) the model lacks: \['body\.9\.weight'\]"):
        learn.load(tmp_path / 'other.pth')
    assert same_weights(weights(learn), before)


class Payload:
    """A pickled object: never built."""


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_a_file_that_is_not_plain_tensors_is_named_and_never_unpickled(learn, tmp_path):
    torch.save(learn.model, tmp_path / 'whole_model.pth')       # torch.save(model), not its weights
    torch.save({'x': Payload()}, tmp_path / 'objects.pth')
    for name in ('whole_model.pth', 'objects.pth'):
        with pytest.raises(ValueError, match=rf'{name} holds pickled Python objects.*never unpickles.*'
                                             r'learn\.save\(name\)') as e:
            learn.load(tmp_path / name)
        assert 'weights_only' not in str(e.value) and e.value.__cause__ is None


def test_a_truncated_or_empty_weights_file_is_called_so(learn, tmp_path):
    good = learn.save('m').read_bytes()
    before = weights(learn)
    (tmp_path / 'cut.pth').write_bytes(good[:len(good) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(ValueError, match=r'cut\.pth is truncated or damaged'):
        learn.load(tmp_path / 'cut.pth')
    with pytest.raises(ValueError, match=r'empty\.pth is empty \(0 bytes\)'):
        learn.load(tmp_path / 'empty.pth')
    assert same_weights(weights(learn), before)


def test_a_checkpoint_from_another_model_does_not_touch_the_optimizer(learn, tmp_path):
    learn.fit(1e-2, 1)
    path = learn.save('ckpt', with_opt=True)
    state = torch.load(path, weights_only=True)
    state['opt']['param_groups'] = state['opt']['param_groups'][:2]
    torch.save(state, tmp_path / 'bad_opt.pth')
    before, opt_before = weights(learn), learn.layer_opt
    with pytest.raises(ValueError, match=r'bad_opt\.pth holds optimizer state for layer groups of '
                                         r'\[\d+, \d+\] parameters, but this learner has \[\d+, \d+, \d+\]'):
        learn.load(tmp_path / 'bad_opt.pth')
    assert same_weights(weights(learn), before) and learn.layer_opt is opt_before


def test_save_on_a_full_disk_names_the_file_and_keeps_the_old_one(learn, monkeypatch):
    import errno
    path = learn.save('m')
    good = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b'part')
        try:
            raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError:  # how torch reports it: its own RuntimeError, the OSError as context
            raise RuntimeError('[enforce fail at inline_container.cc:603] . unexpected pos 64')  # noqa: B904 (no `from`: as torch)

    monkeypatch.setattr(torch, 'save', full)
    with pytest.raises(OSError, match=r"cannot save 'm' to .*m\.pth: no space left on device while "
                                      r"writing .*m\.pth") as e:
        learn.save('m')
    assert e.value.errno == errno.ENOSPC and 'read-only' not in str(e.value)
    monkeypatch.undo()
    assert path.read_bytes() == good and os.listdir(path.parent) == ['m.pth']


# ---- a batch of one (issue 9, item 18) ---------------------------------------------------------

def test_a_one_image_training_set_says_why_and_how(get_learner, tiny_arch, tmp_path):
    from conftest import make_image_folder
    from fastlearn.conv_learner import ImageClassifierData, tfms_from_model
    root = make_image_folder(tmp_path / 'one', n_train=1, n_valid=2)
    (root / 'train' / 'bees' / 'bees_000.png').unlink()    # one training image in all
    with pytest.warns(UserWarning, match='class folder'):
        data = ImageClassifierData.from_paths(root, bs=8, num_workers=0,
                                              tfms=tfms_from_model(tiny_arch, 32))
    for precompute in (False, True):
        learn = get_learner(data, precompute=precompute)
        learn.bn_freeze(True)           # fixes the body's statistics, never the new head's
        before = weights(learn)
        with pytest.raises(ValueError, match=r'the training set has 1 image \(train/ants/ants_000\.png\)'
                                             r'.*BatchNorm.*at least 2 images per batch.*'
                                             r'add training images') as e:
            learn.fit(1e-2, 1)
        assert 'bn_freeze' not in str(e.value)     # it would not help: the head's BatchNorm trains
        with pytest.raises(ValueError, match='the training set has 1 image'):
            learn.lr_find()
        assert same_weights(weights(learn), before)


def _linear_head_learner(data):
    """The tiny body with a plain linear head: only the body has BatchNorm."""
    from torch import nn

    from fastlearn.learner import Learner
    from tiny import TinyNet
    net = TinyNet()
    body = nn.Sequential(net.block1, net.block2, net.block3)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, data.c))
    return Learner(data, nn.Sequential(body, head), [body, head], device='cpu', quiet=True)


def test_bs_one_says_why_and_how(get_data, get_learner):
    learn = get_learner(get_data(bs=1))
    with pytest.raises(ValueError, match=r'bs=1 gives batches of one image.*use bs of 2') as e:
        learn.fit(1e-2, 1)
    assert 'bn_freeze' not in str(e.value)
    plain = _linear_head_learner(get_data(bs=1))             # BatchNorm in the body only
    before = weights(plain)
    with pytest.raises(ValueError, match=r'bs=1 gives batches of one image.*learn\.bn_freeze\(True\)'):
        plain.fit(1e-2, 1)
    assert same_weights(weights(plain), before)
    plain.bn_freeze(True)                                    # the fix the message offers
    plain.fit(1e-2, 1)
    assert not same_weights(weights(plain), before)


def test_every_written_file_gets_the_umask_permissions(get_data, get_learner, tmp_path):
    old = os.umask(0o022)
    try:
        data = get_data()
        learn = get_learner(data, precompute=True)
        learn.fit(1e-2, 1)                                        # writes the activation cache
        written = [learn.save('m'), learn.save('ck', with_opt=True),
                   learn.export(tmp_path / 'export.pth'),
                   *learn.tmp_path.glob('*.npy')]
        resized = data.resize(16, str(tmp_path / 'small'))
        written += [resized.trn_ds.root / f for f in resized.trn_ds.fnames[:3]]
    finally:
        os.umask(old)
    assert len(written) >= 7
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}
    assert {oct(d.stat().st_mode & 0o777) for d in (learn.models_path, tmp_path / 'small' / '16')} \
        == {oct(0o755)}
