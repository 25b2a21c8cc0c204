"""The precompute cache: the head on cached activations equals the frozen model, where the cache
lives, what invalidates it (files, size, transforms, split, body weights) and what reuses it."""
from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastlearn.precompute as pc
from conftest import CLASS_COLOURS, noise_image
from fastlearn.conv_learner import ConvLearner, ImageClassifierData, tfms_from_model, tfms_from_stats
from fastlearn.core import set_seed
from fastlearn.precompute import BodyDigest, cache_prefix, head_threads, weights_digest
from fastlearn.sgdr import Callback
from test_learner import _one_thread, get_data, get_learner  # noqa: F401 (fixtures)


@pytest.fixture
def computes(monkeypatch) -> list[int]:
    """The number of images of every `compute_activations` call (one per split filled)."""
    calls: list[int] = []
    real = pc.compute_activations

    def counting(features, dl, **kwargs):
        calls.append(len(dl.dataset))
        return real(features, dl, **kwargs)

    monkeypatch.setattr(pc, 'compute_activations', counting)
    return calls


@pytest.fixture
def learn(get_data, get_learner):
    return get_learner(get_data(), precompute=True)


def full_model(learn, dl) -> np.ndarray:
    """Log-probabilities of the whole frozen model in eval mode, batch by batch."""
    learn.model.eval()
    with torch.no_grad():
        return torch.cat([nn.functional.log_softmax(learn.model(x), -1) for x, _ in dl]).numpy()


def head(learn, acts: np.ndarray) -> np.ndarray:
    learn.model.head.eval()
    with torch.no_grad():
        return nn.functional.log_softmax(learn.model.head(torch.from_numpy(acts)), -1).numpy()


def cache_files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob('*.npy'))


# --- equality with the frozen model ------------------------------------------------------------

def test_head_on_cached_activations_equals_the_frozen_model(learn):
    learn.fit(1e-2, 2)  # a trained head, and BatchNorm statistics of its own
    for split, dl in (('val', learn.data.val_dl), ('trn', learn.data.fix_dl)):
        acts = learn.activations(split)
        assert acts.shape == (len(dl.dataset), 64) and acts.dtype == np.float32
        np.testing.assert_allclose(head(learn, acts), full_model(learn, dl), atol=1e-5)
    on = learn.predict()
    learn.precompute = False
    np.testing.assert_allclose(on, learn.predict(), atol=1e-5)
    np.testing.assert_allclose(on, full_model(learn, learn.data.val_dl), atol=1e-5)


def test_precompute_fit_leaves_the_body_alone(learn):
    body = {k: v.clone() for k, v in learn.model.body.state_dict().items()}
    learn.fit(1e-2, 2)
    assert all(torch.equal(v, learn.model.body.state_dict()[k]) for k, v in body.items())


# --- where the cache lives -------------------------------------------------------------------

def test_cache_is_written_under_tmp(learn):
    learn.fit(1e-2, 1)
    names = cache_files(learn.data.path / 'tmp')
    assert len(names) == 2
    assert re.fullmatch(r'x_act_trn_tiny_0_32_[0-9a-f]{16}\.npy', names[0])
    assert re.fullmatch(r'x_act_val_tiny_0_32_[0-9a-f]{16}\.npy', names[1])
    np.testing.assert_array_equal(np.load(learn.data.path / 'tmp' / names[1]), learn.activations('val'))


def test_absolute_tmp_name(get_data, get_learner, tmp_path):
    learn = get_learner(get_data(), precompute=True, tmp_name=str(tmp_path / 'cache'))
    learn.fit(1e-2, 1)
    assert len(cache_files(tmp_path / 'cache')) == 2
    assert not (learn.data.path / 'tmp').exists()


def test_cache_prefix_is_a_safe_file_name():
    assert cache_prefix('trn', 'resnet34', 0, 224) == 'x_act_trn_resnet34_0_224'
    assert cache_prefix('val', 'efficientnet_lite0', 0, 128) == 'x_act_val_efficientnet_lite0_0_128'
    assert cache_prefix('val', 'hf-hub:timm/resnet50.a1_in1k', 1, 299) == \
        'x_act_val_hf-hub-timm-resnet50.a1_in1k_1_299'


# --- reuse -----------------------------------------------------------------------------------

def test_reused_when_nothing_changed(get_data, get_learner, learn, computes):
    learn.fit(1e-2, 1)
    assert computes == [24, 8]  # train (through fix_dl), then valid
    learn.fit(1e-2, 1)
    learn.predict()
    learn.lr_find()
    assert computes == [24, 8]
    learn.precompute = False
    learn.fit(1e-2, 1)  # a frozen body in eval: the cache still holds
    learn.precompute = True
    learn.fit(1e-2, 1)
    assert computes == [24, 8]
    other = get_learner(get_data(), precompute=True)  # same files, weights, transforms: disk
    np.testing.assert_array_equal(other.activations('trn'), learn.activations('trn'))
    other.fit(1e-2, 1)
    assert computes == [24, 8]


def test_a_run_that_fills_the_cache_trains_as_one_that_loads_it(get_data, get_learner, computes):
    """Same seed, same numbers: filling the cache iterates loaders, which must not draw from
    torch's generator (a first run and a rerun of `fastlearn demo` differed by 2.5 points)."""
    runs = []
    for _ in range(2):
        set_seed(0)
        learn = get_learner(get_data(), precompute=True)
        learn.fit(1e-2, 2)
        runs.append((learn.sched.losses, learn.sched.epoch_metrics))
    assert computes == [24, 8]  # the first run filled both splits, the second read them
    assert runs[0] == runs[1]


def test_test_set_activations_are_cached_too(learn, computes):
    assert learn.predict(is_test=True).shape == (3, 2)
    learn.predict(is_test=True)
    assert computes == [3]
    assert len(cache_files(learn.data.path / 'tmp')) == 1


# --- invalidation ----------------------------------------------------------------------------

def test_a_touched_file_recomputes_its_split_only(learn, get_data, computes):
    learn.fit(1e-2, 1)
    f = learn.data.path / learn.data.trn_ds.fnames[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    learn.fit(1e-2, 1)
    assert computes == [24, 8, 24]
    assert len(cache_files(learn.data.path / 'tmp')) == 2  # the stale train file is gone


def test_an_added_file_recomputes(learn, get_data, computes):
    learn.fit(1e-2, 1)
    noise_image(CLASS_COLOURS['ants']).save(learn.data.path / 'train' / 'ants' / 'new.png')
    learn.set_data(get_data())
    learn.fit(1e-2, 1)
    assert computes == [24, 8, 25]
    assert learn.activations('trn').shape == (25, 64)


def test_a_new_size_recomputes_both_splits(learn, get_data, computes):
    before = learn.activations('val')
    learn.set_data(get_data(sz=48))
    assert learn.precompute and learn.trainable_groups() == [False, False, True]
    learn.fit(1e-2, 1)
    assert computes == [8, 24, 8]
    assert not np.allclose(learn.activations('val'), before)
    names = cache_files(learn.data.path / 'tmp')
    assert sum('_48_' in n for n in names) == 2 and sum('_32_' in n for n in names) == 1


def test_new_validation_transforms_recompute(learn, image_folder, computes):
    learn.activations('val')
    tfms = tfms_from_stats(((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), 32)
    learn.set_data(ImageClassifierData.from_paths(image_folder, bs=8, tfms=tfms, num_workers=0))
    learn.activations('val')
    assert computes == [8, 8]


def test_a_new_split_recomputes(tmp_path, tiny_arch, get_learner, computes):
    rng = np.random.default_rng(0)
    (tmp_path / 'flat').mkdir()
    lines = ['id,label']
    for i in range(20):
        cls = ('ants', 'bees')[i % 2]
        noise_image(CLASS_COLOURS[cls], 32, rng).save(tmp_path / 'flat' / f'{i:02d}.png')
        lines.append(f'{i:02d},{cls}')
    (tmp_path / 'labels.csv').write_text('\n'.join(lines) + '\n')

    def data(val_idxs):
        return ImageClassifierData.from_csv(tmp_path, 'flat', tmp_path / 'labels.csv', bs=4,
                                            suffix='.png', val_idxs=val_idxs, num_workers=0,
                                            tfms=tfms_from_model(tiny_arch, 32))

    learn = get_learner(data([0, 1, 2, 3]), precompute=True)
    learn.fit(1e-2, 1)
    learn.set_data(data([0, 1, 2, 3]))
    learn.fit(1e-2, 1)
    assert computes == [16, 4]
    learn.set_data(data([4, 5, 6, 7]))
    learn.fit(1e-2, 1)
    assert computes == [16, 4, 16, 4]


def test_changed_body_weights_recompute(learn, computes):
    learn.fit(1e-2, 1)
    with torch.no_grad():
        learn.model.body[0][0].weight.mul_(1.5)
    learn.fit(1e-2, 1)
    assert computes == [24, 8, 24, 8]


def test_a_body_that_tells_no_image_apart_is_an_error(learn):
    with torch.no_grad():  # dead maps, as EfficientNet-Lite0's at sz=32
        for p in learn.model.body.parameters():
            p.zero_()
    for _ in range(2):  # and again: the rejected activations are neither kept nor cached
        with pytest.raises(ValueError, match=r'tiny gives 24 of the 24 training images the same activations '
                                             r'at sz=32: nothing to train on\. Use larger images'):
            learn.fit(1e-2, 1)
    assert not any(f.startswith('x_act_trn') for f in cache_files(learn.tmp_path))


def test_a_few_distinct_images_among_many_alike_are_still_too_few():
    acts = np.zeros((10, 4), np.float32)
    acts[:4] = np.arange(16).reshape(4, 4)
    with pytest.raises(ValueError, match='gives 6 of the 10 training images the same activations at sz=32'):
        pc.check_informative(acts, 'arch', 32)
    acts[4] = 1
    assert pc.check_informative(acts, 'arch', 32) is acts  # 5 of 10 alike: a poor set, not a dead body


def test_fine_tuning_the_body_recomputes(learn, computes):
    learn.fit(1e-2, 1)
    with pytest.warns(UserWarning, match='precompute turned off'):
        learn.unfreeze()
    learn.fit(np.array([1e-4, 1e-3, 1e-2]), 1)
    learn.freeze()
    learn.precompute = True
    learn.fit(1e-2, 1)
    assert computes == [24, 8, 24, 8]


def test_loading_other_weights_recomputes(learn, computes):
    learn.save('start')
    learn.fit(1e-2, 1)
    learn.precompute = False
    learn.unfreeze()
    learn.fit(1e-3, 1)
    learn.save('tuned')
    learn.freeze()
    learn.precompute = True
    learn.load('start')
    learn.activations('val')
    learn.load('tuned')
    learn.activations('val')
    learn.load('start')
    learn.activations('val')  # back to the first weights: their file was replaced, so again
    assert computes == [24, 8, 8, 8]


def test_a_damaged_cache_file_is_recomputed(learn, computes, caplog):
    acts = learn.activations('val')
    (f,) = (learn.data.path / 'tmp').glob('x_act_val_*.npy')
    f.write_bytes(b'not an array')
    learn._acts.clear()  # a new session: only the disk remains
    with caplog.at_level(logging.WARNING, logger='fastlearn.precompute'):
        np.testing.assert_array_equal(learn.activations('val'), acts)
    assert computes == [8, 8] and 'unreadable' in caplog.text
    assert np.load(f).shape == (8, 64)


# --- the body's digest -----------------------------------------------------------------------

def test_body_digest_is_hashed_once_while_the_body_cannot_change(learn, monkeypatch):
    calls = []
    real = pc.weights_digest
    monkeypatch.setattr(pc, 'weights_digest', lambda m: calls.append(1) or real(m))
    for _ in range(3):
        learn.fit(1e-2, 1)
    learn.predict()
    learn.lr_find(num_it=2)
    assert len(calls) == 1
    learn.precompute = False
    learn.fit(1e-2, 1)  # the full model ran: hash again once, same digest, same cache
    learn.precompute = True
    learn.fit(1e-2, 1)
    learn.fit(1e-2, 1)
    assert len(calls) == 2


def test_body_digest_notices_in_place_edits_and_reloads():
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    memo = BodyDigest()
    d0 = memo(body)
    assert memo(body) == d0 == weights_digest(body)
    with torch.no_grad():
        body[0].weight.add_(1)
    d1 = memo(body)
    assert d1 != d0 and d1 == weights_digest(body)
    body.train()(torch.randn(2, 3, 5, 5))  # BatchNorm statistics move
    d2 = memo(body)
    assert d2 != d1 and d2 == weights_digest(body)
    state = {k: v.clone() for k, v in body.state_dict().items()}
    state['0.bias'] += 1
    body.load_state_dict(state)
    assert memo(body) == weights_digest(body) != d2
    body[0].weight.data.mul_(2)  # `.data` bypasses the version counters ...
    memo.invalidate()             # ... so it needs this
    assert memo(body) == weights_digest(body)


# --- switching precompute --------------------------------------------------------------------

def test_augmentation_warning_once_pointing_at_the_callers_line(get_data, tiny_arch):
    data = get_data(aug=True)
    with pytest.warns(UserWarning, match='aug_tfms have no effect') as rec:
        learn = ConvLearner.pretrained(tiny_arch, data, precompute=True, device='cpu', quiet=True)
    assert len(rec) == 1 and rec[0].filename == __file__
    learn.precompute = False
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        learn.precompute = True  # no second warning


def test_unfreeze_turns_precompute_off_and_warns(learn):
    with pytest.warns(UserWarning, match='precompute turned off') as rec:
        learn.unfreeze()
    assert not learn.precompute and rec[0].filename == __file__
    assert 'precompute off' in repr(learn)
    learn.freeze()
    learn.precompute = True
    with pytest.warns(UserWarning, match='precompute turned off') as rec:
        learn.freeze_to(1)  # called directly, the warning still names this line
    assert rec[0].filename == __file__
    with pytest.raises(ValueError, match=r'precompute=True needs a frozen body.*learn.freeze\(\)'):
        learn.precompute = True
    learn.freeze_to(1)
    with pytest.raises(ValueError, match='needs a frozen body'):
        learn.precompute = True


def test_precompute_off_then_on_reuses_the_cache(learn, computes):
    acts = learn.activations('trn')
    learn.precompute = False
    learn.fit(1e-2, 1)
    learn.precompute = True
    assert learn.activations('trn') is acts
    assert computes == [24]


def test_activations_name_the_splits(learn):
    with pytest.raises(ValueError, match=r"split must be one of \['trn', 'val', 'test'\]"):
        learn.activations('train')


# --- speed of the head-only path -------------------------------------------------------------

class Threads(Callback):
    def __init__(self):
        self.seen: set[int] = set()

    def on_batch_begin(self, state):
        self.seen.add(torch.get_num_threads())


def test_the_head_trains_on_one_thread_and_the_full_model_on_all(learn):
    torch.set_num_threads(2)
    cb = Threads()
    learn.fit(1e-2, 1, callbacks=[cb])
    assert cb.seen == {1} and torch.get_num_threads() == 2
    learn.precompute = False
    cb = Threads()
    learn.fit(1e-2, 1, callbacks=[cb])
    assert cb.seen == {2}


def test_head_threads_restores_the_count_after_an_error():
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError):
        with head_threads(torch.device('cpu')):
            assert torch.get_num_threads() == 1
            raise RuntimeError('boom')
    assert torch.get_num_threads() == 2


def test_tta_with_precompute_on_runs_the_full_model(learn):
    learn.fit(1e-2, 1)
    log_preds, y = learn.TTA(n_aug=2)
    assert log_preds.shape == (3, 8, 2)
    np.testing.assert_allclose(log_preds[0], learn.predict(), atol=1e-5)
    np.testing.assert_array_equal(y, learn.data.val_y)



def test_a_custom_head_gets_unpooled_activations_beside_a_cached_pooled_set(get_data, tiny_arch):
    data = get_data()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pooled = ConvLearner.pretrained(tiny_arch, data, precompute=True, device='cpu', quiet=True)
        n = pooled.activations('val').shape[1]
        head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, data.c))
        flat = ConvLearner.pretrained(tiny_arch, data, precompute=True, custom_head=head,
                                      device='cpu', quiet=True)
    # same files and body, but the custom head sees the (32, 8, 8) maps, not 2 x 32 pooled
    assert n == 64 and flat.activations("val").shape == (8, 32, 8, 8)
    assert np.isfinite(flat.fit(1e-2, 1)[0])
