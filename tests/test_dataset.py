"""Data: folder, CSV and array sources, the six loaders, bad input, open_image, resize."""
from __future__ import annotations

import io
import os
import pickle
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder, noise_image
from fastlearn.dataset import (ArraysDataset, BadImageError, FilesDataset, ImageClassifierData,
                               get_cv_idxs, open_image)
from fastlearn.loader import Loader
from fastlearn.resize import resize_file


# ---------------------------------------------------------------- helpers

class StubTfms:
    """Follows the Transforms contract; adds `offset` so a batch shows which pipeline made it."""

    def __init__(self, offset: float, sz: int = 8):
        self.offset, self.sz, self.draft_size, self.tfm_y = offset, sz, sz, None
        self.stats = (np.zeros(3), np.ones(3))

    def __call__(self, im, y=None):
        a = np.asarray(im.resize((self.sz, self.sz)), dtype=np.float32) / 255
        return torch.from_numpy(a).permute(2, 0, 1) + self.offset, y

    def denorm(self, x):
        return np.moveaxis(np.asarray(x) - self.offset, -3, -1)


STUBS = (StubTfms(10.0), StubTfms(0.0))  # (train, valid)


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under `root` with its modification time."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob('*'))}


def jpeg_bytes(sz=(64, 48), seed=0, **save_kw) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (sz[1], sz[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, 'JPEG', **save_kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- from_paths

def test_from_paths_shapes_labels_and_sorted_classes(tmp_path):
    root = make_image_folder(tmp_path / 'd', classes=('dogs', 'ants', 'cats'), n_train=3,
                             n_valid=2, n_test=4)
    data = ImageClassifierData.from_paths(root, bs=4, test_name='test', num_workers=0)
    assert data.classes == ['ants', 'cats', 'dogs'] and data.c == 3
    assert (len(data.trn_ds), len(data.val_ds), len(data.test_ds)) == (9, 6, 4)
    for ds in (data.trn_ds, data.val_ds):
        assert all(isinstance(f, str) for f in ds.fnames)
        assert [data.classes[y] for y in ds.y] == [f.split('/')[1] for f in ds.fnames]
    assert data.test_ds.fnames[0] == 'test/000.png' and (data.test_ds.y == 0).all()
    assert not data.is_multi and not data.is_reg and data.path == root
    x, y = next(iter(data.val_dl))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert data.trn_y is data.trn_ds.y and data.val_y is data.val_ds.y
    assert ImageClassifierData.from_paths(root).test_dl is None


def test_one_class_index_shared_by_every_split(tmp_path):
    root = make_image_folder(tmp_path / 'd', classes=('ants', 'bees', 'cats'), n_train=2, n_valid=2)
    for f in (root / 'valid' / 'ants').iterdir():  # valid lacks a class: indices must not shift
        f.unlink()
    (root / 'valid' / 'ants').rmdir()
    data = ImageClassifierData.from_paths(root, num_workers=0)
    assert sorted(set(data.val_y.tolist())) == [1, 2]
    assert [data.classes[y] for y in data.val_y] == [f.split('/')[1] for f in data.val_ds.fnames]
    make_image_folder(tmp_path / 'extra', classes=('dogs',), n_train=0, n_valid=1)
    (tmp_path / 'extra' / 'valid' / 'dogs').rename(root / 'valid' / 'dogs')
    with pytest.raises(ValueError, match=r"\['dogs'\].*training set"):
        ImageClassifierData.from_paths(root)


def test_labelled_test_folder(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=1)
    make_image_folder(tmp_path / 't', classes=('bees',), n_train=0, n_valid=3)
    (tmp_path / 't' / 'valid').rename(root / 'test')
    data = ImageClassifierData.from_paths(root, test_name='test', test_with_labels=True)
    assert data.test_ds.y.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match='test_with_labels=True'):
        ImageClassifierData.from_paths(root, test_name='test')


@pytest.mark.parametrize('missing', ['train', 'valid'])
def test_missing_split_folder_names_path_and_layout(tmp_path, missing):
    root = make_image_folder(tmp_path / 'd', n_train=1, n_valid=1)
    (root / missing).rename(root / 'elsewhere')
    with pytest.raises(FileNotFoundError, match=rf"{root / missing} not found.*<class>/<image>"):
        ImageClassifierData.from_paths(root)


def test_empty_class_folder_warns_and_keeps_its_index(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=1)
    (root / 'train' / 'cats').mkdir()
    with pytest.warns(UserWarning, match=r"without images.*train/cats"):
        data = ImageClassifierData.from_paths(root)
    assert data.classes == ['ants', 'bees', 'cats'] and data.c == 3


def test_bad_files_skipped_with_one_warning_hidden_ignored(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=3, n_valid=2)
    write(root / 'train' / 'ants' / 'notes.txt', b'hello')
    write(root / 'train' / 'ants' / 'empty.jpg', b'')
    write(root / 'valid' / 'bees' / 'fake.png', b'<html>not a png</html>')
    write(root / 'train' / 'bees' / '.DS_Store', b'\0\1')
    write(root / 'train' / 'bees' / '.hidden.jpg', b'')
    write(root / 'train' / '.ipynb_checkpoints' / 'x.png', b'')
    before = snapshot(root)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        data = ImageClassifierData.from_paths(root)
    assert len(w) == 1, [str(x.message) for x in w]
    msg = str(w[0].message)
    assert msg.startswith('skipped 3 file(s)') and 'empty.jpg (zero bytes)' in msg
    assert 'notes.txt (not an image extension)' in msg and 'fake.png (not an image' in msg
    assert '.DS_Store' not in msg and 'ipynb' not in msg and data.classes == ['ants', 'bees']
    assert (len(data.trn_ds), len(data.val_ds)) == (6, 4)
    with pytest.raises(BadImageError, match=r"3 file\(s\).*empty\.jpg.*on_bad_file='skip'"):
        ImageClassifierData.from_paths(root, on_bad_file='raise')
    with pytest.raises(ValueError, match="on_bad_file must be one of"):
        ImageClassifierData.from_paths(root, on_bad_file='ignore')
    assert snapshot(root) == before  # nothing skipped is moved or deleted


@pytest.mark.parametrize('num_workers', [0, 2])
def test_corrupt_jpeg_found_at_load_names_the_file(tmp_path, num_workers):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=2)
    good = jpeg_bytes()
    write(root / 'valid' / 'ants' / 'trunc.jpg', good[:len(good) // 2])
    data = ImageClassifierData.from_paths(root, bs=8, num_workers=num_workers)
    with pytest.raises(BadImageError, match=r"valid/ants/trunc\.jpg.*check_images=True"):
        next(iter(data.val_dl))


def test_check_images_applies_the_policy_up_front(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=2)
    good = jpeg_bytes()
    write(root / 'valid' / 'ants' / 'trunc.jpg', good[:len(good) // 2])
    with pytest.warns(UserWarning, match=r"skipped 1 file.*trunc\.jpg \(.*truncated"):
        data = ImageClassifierData.from_paths(root, check_images=True)
    assert len(data.val_ds) == 4 and len(next(iter(data.val_dl))[0]) == 4
    with pytest.raises(BadImageError, match='trunc.jpg'):
        ImageClassifierData.from_paths(root, check_images=True, on_bad_file='raise')


def test_tfms_must_be_a_pair(image_folder):
    with pytest.raises(ValueError, match=r"tfms must be a \(train, valid\) pair"):
        ImageClassifierData.from_paths(image_folder, tfms=StubTfms(0))


# ---------------------------------------------------------------- loaders

def test_loader_roles_shuffle_and_transforms(image_folder):
    data = ImageClassifierData.from_paths(image_folder, bs=6, tfms=STUBS, test_name='test',
                                          num_workers=0)
    assert data.sz == 8
    x, y = next(iter(data.fix_dl))  # train images, valid tfms, in order
    assert x.max() <= 1 and y.tolist() == data.trn_y[:6].tolist()
    first = STUBS[1](open_image(image_folder / data.trn_ds.fnames[0]))[0]
    assert torch.allclose(x[0], first)
    x, y = next(iter(data.aug_dl))  # valid images, train tfms, in order
    assert x.min() >= 10 and y.tolist() == data.val_y[:6].tolist()
    assert next(iter(data.val_dl))[0].max() <= 1
    assert next(iter(data.test_dl))[0].max() <= 1 and next(iter(data.test_aug_dl))[0].min() >= 10
    torch.manual_seed(1)
    ys = torch.cat([y for _, y in data.trn_dl])
    assert next(iter(data.trn_dl))[0].min() >= 10
    assert sorted(ys.tolist()) == sorted(data.trn_y.tolist()) and ys.tolist() != data.trn_y.tolist()
    assert data.trn_dl.dataset is data.trn_ds and data.fix_dl.dataset.fnames == data.trn_ds.fnames


@pytest.mark.parametrize('n, bs, sizes', [(13, 4, [4, 4, 4]), (14, 4, [4, 4, 4, 2]), (1, 4, [1])])
def test_trn_dl_drops_only_a_last_batch_of_one(tmp_path, n, bs, sizes):
    x = np.zeros((n, 5), np.float32)
    data = ImageClassifierData.from_arrays(tmp_path, (x, np.zeros(n)), (x, np.zeros(n)), bs=bs)
    assert [len(b[1]) for b in data.trn_dl] == sizes
    assert sum(len(b[1]) for b in data.val_dl) == n


def test_two_workers_give_the_same_batches_as_none(image_folder):
    d0 = ImageClassifierData.from_paths(image_folder, bs=5, tfms=STUBS, num_workers=0)
    d2 = ImageClassifierData.from_paths(image_folder, bs=5, tfms=STUBS, num_workers=2)
    assert d2.val_dl.num_workers == 2 and d2.val_dl.persistent_workers and isinstance(d2.val_dl, Loader)
    for (x0, y0), (x2, y2) in zip(d0.val_dl, d2.val_dl, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert sum(len(y) for _, y in d2.trn_dl) == len(d2.trn_ds)
    assert sum(len(y) for _, y in d2.trn_dl) == len(d2.trn_ds)  # persistent workers, epoch 2


def test_datasets_pickle_for_spawned_workers(image_folder):
    data = ImageClassifierData.from_paths(image_folder, tfms=STUBS, test_name='test')
    for ds in (data.trn_ds, data.fix_ds, data.test_aug_ds):
        back = pickle.loads(pickle.dumps(ds))
        assert back.fnames == ds.fnames and torch.equal(back[0][0], ds[0][0])


def test_default_workers_and_no_pinning_on_cpu(image_folder):
    from fastlearn.core import default_num_workers
    data = ImageClassifierData.from_paths(image_folder)
    assert data.num_workers == default_num_workers()
    assert data.trn_dl.pin_memory == torch.cuda.is_available()


def test_denorm_round_trips(image_folder):
    data = ImageClassifierData.from_paths(image_folder, tfms=STUBS, bs=3, num_workers=0)
    x, _ = next(iter(data.aug_dl))
    out = data.aug_ds.denorm(x)
    assert out.shape == (3, 8, 8, 3) and 0 <= out.min() and out.max() <= 1
    raw = ImageClassifierData.from_paths(image_folder, bs=3, num_workers=0)
    x, _ = next(iter(raw.val_dl))
    im = np.asarray(open_image(image_folder / raw.val_ds.fnames[0]))
    np.testing.assert_allclose(raw.val_ds.denorm(x)[0], im / 255, atol=1e-6)


def test_real_transforms_batch_denorm_and_draft_size(tmp_path, monkeypatch):
    from fastlearn import image_datasets
    from fastlearn.transforms import imagenet_stats, tfms_from_stats, transforms_side_on
    root = make_image_folder(tmp_path / 'd', n_train=4, n_valid=3, sz=32)
    tfms = tfms_from_stats(imagenet_stats, 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    asked = []

    def spy(path, draft_size=None):
        asked.append(draft_size)
        return open_image(path, draft_size)

    monkeypatch.setattr(image_datasets, 'open_image', spy)
    data = ImageClassifierData.from_paths(root, bs=3, tfms=tfms, num_workers=0)
    assert data.sz == 32 and data.trn_ds.transform is tfms[0] and data.fix_ds.transform is tfms[1]
    x, y = next(iter(data.val_dl))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32) and x.min() < 0
    im = np.asarray(open_image(root / data.val_ds.fnames[0])) / 255
    np.testing.assert_allclose(data.val_ds.denorm(x)[0], im, atol=2e-3)
    assert asked == [tfms[1].draft_size] * 3
    next(iter(data.trn_dl))
    assert asked[3:] == [tfms[0].draft_size] * 3 and tfms[0].draft_size == 36


# ---------------------------------------------------------------- fingerprint

def test_fingerprint_tracks_touches_additions_and_labels(image_folder):
    data = ImageClassifierData.from_paths(image_folder)
    fp = data.trn_ds.fingerprint()
    assert fp == ImageClassifierData.from_paths(image_folder).trn_ds.fingerprint()
    assert data.val_ds.fingerprint() != fp
    f = image_folder / data.trn_ds.fnames[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert data.trn_ds.fingerprint() != fp
    fp = data.trn_ds.fingerprint()
    noise_image((1, 2, 3)).save(image_folder / 'train' / 'ants' / 'new.png')
    assert ImageClassifierData.from_paths(image_folder).trn_ds.fingerprint() != fp
    relabelled = FilesDataset(data.trn_ds.fnames, 1 - data.trn_y, None, image_folder)
    assert relabelled.fingerprint() != fp


# ---------------------------------------------------------------- CSV

def csv_folder(tmp_path, n=10, labels=None, ext='.png'):
    root = tmp_path / 'c'
    (root / 'imgs').mkdir(parents=True)
    for i in range(n):
        noise_image((40, 40, 200)).save(root / 'imgs' / f'id{i}{ext}')
    labels = labels or [('cat' if i % 2 else 'dog') for i in range(n)]
    return root, write_csv(root / 'labels.csv', 'id,label\n' + ''.join(
        f'id{i},{lbl}\n' for i, lbl in enumerate(labels)))


def test_csv_single_label_with_default_split(tmp_path):
    root, csv_path = csv_folder(tmp_path)
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', bs=4, num_workers=0)
    assert data.classes == ['cat', 'dog'] and not data.is_multi and data.c == 2
    val = get_cv_idxs(10)
    assert sorted(data.val_ds.fnames) == sorted(f'imgs/id{i}.png' for i in val)
    assert [data.classes[y] for y in data.val_y] == \
        ['cat' if int(f[len('imgs/id'):-len('.png')]) % 2 else 'dog' for f in data.val_ds.fnames]
    assert len(data.trn_ds) == 8 and data.trn_y.dtype == np.int64
    make_image_folder(tmp_path / 't', classes=('ants',), n_train=0, n_valid=2)
    (tmp_path / 't' / 'valid' / 'ants').rename(root / 'test')
    same = ImageClassifierData.from_csv(root, 'imgs', 'labels.csv', suffix='.png', val_idxs=val,
                                        test_name='test')
    assert same.val_ds.fnames == data.val_ds.fnames
    assert same.test_ds.fnames == ['test/ants_000.png', 'test/ants_001.png']
    assert same.test_ds.y.tolist() == [0, 0] and same.test_aug_ds.transform is None
    x, y = next(iter(data.trn_dl))
    assert x.shape == (4, 3, 32, 32)


def test_csv_multi_label_is_n_hot(tmp_path):
    root, csv_path = csv_folder(tmp_path, 5, ['a b', 'b', 'c', 'a c', 'b'])
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0, 1],
                                        num_workers=0)
    assert data.is_multi and data.classes == ['a', 'b', 'c'] and data.c == 3
    assert data.val_y.tolist() == [[1, 1, 0], [0, 1, 0]] and data.val_y.dtype == np.float32
    _, y = next(iter(data.val_dl))
    assert y.dtype == torch.float32 and y.shape == (2, 3)


def test_csv_multi_label_separator_and_empty_rows(tmp_path):
    root, csv_path = csv_folder(tmp_path, 3, ['a', '"a;b"', 'b'])
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0],
                                        cat_separator=';')
    assert data.is_multi and data.trn_y.tolist() == [[1, 1], [0, 1]]
    write_csv(csv_path, 'id,label\nid0,a\nid1,\nid2,b\n')
    with pytest.warns(UserWarning, match=r"line\(s\) \[3\] have no label.*multi-label"):
        data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[1])
    assert data.trn_y.tolist() == [[1, 0], [0, 1]] and data.val_y.tolist() == [[0, 0]]


def test_csv_regression(tmp_path):
    root, csv_path = csv_folder(tmp_path, 4, ['1.5 2', '-3 4', '0 0', '7 8e-1'])
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[3],
                                        continuous=True, num_workers=0)
    assert data.is_reg and not data.is_multi and data.c == 2 and data.classes is None
    assert data.val_y.tolist() == [[7.0, pytest.approx(0.8)]] and data.trn_y.dtype == np.float32
    write_csv(csv_path, 'id,v\nid0,1\nid1,x\n')
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: continuous=True.*\['x'\]"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', continuous=True,
                                     val_idxs=[0])


def test_csv_errors_name_the_csv_line_and_fix(tmp_path):
    root, csv_path = csv_folder(tmp_path, 4)
    with pytest.raises(FileNotFoundError, match=r"labels\.csv, line 2: file .*id0 does not "
                                                r"exist.*suffix='\.png'"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path)
    write_csv(csv_path, 'id,label\nid0,a\nid1,b\nid9,a\nid2,b\n')
    with pytest.raises(FileNotFoundError, match=r"line 4: file .*id9\.png does not exist"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png')
    write_csv(csv_path, 'id,label\nid0,a\nid1,b,extra\n')
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: 3 columns.*first row has 2"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png')
    write_csv(csv_path, 'id\nid0\nid1\n')
    with pytest.raises(ValueError, match=r"line 1: .*no label column.*column 1 = label"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png')
    write_csv(csv_path, 'id,label\n')
    with pytest.raises(ValueError, match="no data rows"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png')
    write_csv(csv_path, 'id,label\nid0,a\nid1,b\n')
    with pytest.raises(ValueError, match=r"val_idxs must index the CSV's 2 data rows"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[5])
    with pytest.raises(FileNotFoundError, match='nope.csv'):
        ImageClassifierData.from_csv(root, 'imgs', 'nope.csv')


def test_csv_unusable_file_follows_the_policy(tmp_path):
    root, csv_path = csv_folder(tmp_path, 6)
    write(root / 'imgs' / 'id2.png', b'')
    with pytest.warns(UserWarning, match=r"skipped 1 file.*imgs/id2\.png \(zero bytes"):
        data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[1, 2])
    assert data.val_ds.fnames == ['imgs/id1.png'] and len(data.trn_ds) == 4
    with pytest.raises(BadImageError, match='id2.png'):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', on_bad_file='raise')


# ---------------------------------------------------------------- get_cv_idxs

def test_get_cv_idxs_deterministic_course_compatible_and_rng_free():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    idxs = get_cv_idxs(100)
    assert np.array_equal(np.random.get_state()[1], state)
    assert len(idxs) == 20 and len(set(idxs.tolist())) == 20
    assert np.array_equal(idxs, get_cv_idxs(100))
    assert not np.array_equal(idxs, get_cv_idxs(100, seed=1))
    assert np.array_equal(idxs, np.random.RandomState(42).permutation(100)[:20])  # the course's
    assert set(get_cv_idxs(100, cv_idx=1).tolist()).isdisjoint(idxs.tolist())
    with pytest.raises(ValueError, match='val_pct must be between 0 and 1'):
        get_cv_idxs(10, val_pct=20)


# ---------------------------------------------------------------- from_arrays

def test_from_arrays_features_come_back_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 7)).astype(np.float32), np.arange(10) % 3
    data = ImageClassifierData.from_arrays(tmp_path, (x, y), (x[:4], y[:4]), bs=4,
                                           test=x[:2], num_workers=2)
    assert data.c == 3 and data.val_dl.num_workers == 0 and data.path == tmp_path
    xb, yb = next(iter(data.val_dl))
    assert xb.dtype == torch.float32 and torch.equal(xb, torch.from_numpy(x[:4]))
    assert yb.tolist() == [0, 1, 2, 0] and yb.dtype == torch.int64
    assert data.test_ds.y.tolist() == [0, 0] and data.trn_ds.fnames is None
    fp = data.trn_ds.fingerprint()
    x[0, 0] += 1
    assert ArraysDataset(x, y).fingerprint() != fp


@pytest.mark.parametrize('which', [0, 1])
def test_from_arrays_names_a_missing_x(tmp_path, which):
    x, y = np.zeros((4, 3), np.float32), np.arange(4) % 2
    pairs = [(x, y), (x, y)]
    pairs[which] = (None, y)
    with pytest.raises(ValueError, match=r'from_arrays: trn and val need an x array each, got None'):
        ImageClassifierData.from_arrays(tmp_path, *pairs)
    assert ImageClassifierData.from_arrays(tmp_path, (x, y), (x, y)).c == 2


def test_from_arrays_images_go_through_tfms(tmp_path):
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (6, 12, 16, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    data = ImageClassifierData.from_arrays(tmp_path, (x8, y), (x8, y), bs=6, tfms=STUBS,
                                           classes=['a', 'b'], num_workers=0)
    xb, _ = next(iter(data.val_dl))
    assert xb.shape == (6, 3, 8, 8) and data.sz == 8
    raw = ImageClassifierData.from_arrays(tmp_path, (x8 / 255.0, y), (x8 / 255.0, y), bs=6)
    assert torch.equal(next(iter(raw.val_dl))[0], torch.from_numpy(x8).permute(0, 3, 1, 2))
    reg = ImageClassifierData.from_arrays(tmp_path, (x8, y * 0.5), (x8, y * 0.5), continuous=True)
    assert reg.is_reg and reg.c == 1 and reg.trn_y.dtype == np.float32
    with pytest.raises(ValueError, match=r"non-integer values \(e\.g\. 0\.5\).*continuous=True"):
        ImageClassifierData.from_arrays(tmp_path, (x8, y * 0.5), (x8, y * 0.5))
    gray = ImageClassifierData.from_arrays(tmp_path, (x8[..., 0], y), (x8[..., 0], y), bs=6)
    xb = next(iter(gray.val_dl))[0]
    assert xb.shape == (6, 3, 12, 16) and torch.equal(xb[:, 0], xb[:, 2])
    with pytest.raises(ValueError, match=r"\(x, y\) pair"):
        ImageClassifierData.from_arrays(tmp_path, x8, (x8, y))


# ---------------------------------------------------------------- open_image

def test_open_image_modes_become_rgb(tmp_path):
    cmyk = tmp_path / 'cmyk.jpg'
    Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save(cmyk, quality=95)
    rgba = tmp_path / 'rgba.png'
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2] = (200, 10, 10, 255)  # top opaque red, bottom transparent black
    Image.fromarray(a, 'RGBA').save(rgba)
    pal = tmp_path / 'pal.png'
    p = Image.new('P', (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.save(pal, transparency=0)
    gray = tmp_path / 'la.png'
    Image.fromarray(np.full((4, 4, 2), (90, 255), np.uint8), 'LA').save(gray)
    lum = tmp_path / 'l.jpg'
    Image.new('L', (4, 4), 77).save(lum)
    assert tuple(np.asarray(open_image(lum))[0, 0]) == (77, 77, 77)
    for f in (cmyk, rgba, pal, gray, lum):
        im = open_image(f)
        assert im.mode == 'RGB', f
    assert np.allclose(np.asarray(open_image(cmyk))[0, 0], (255, 0, 0), atol=8)
    assert tuple(np.asarray(open_image(rgba))[0, 0]) == (200, 10, 10)
    assert tuple(np.asarray(open_image(rgba))[3, 3]) == (255, 255, 255)  # over white
    assert tuple(np.asarray(open_image(pal))[0, 0]) == (0, 0, 255)
    assert tuple(np.asarray(open_image(pal))[1, 1]) == (255, 255, 255)
    assert tuple(np.asarray(open_image(gray))[0, 0]) == (90, 90, 90)


def test_open_image_scales_16_and_32_bit_to_8_bit(tmp_path):
    a = np.array([[0, 1000], [32768, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / 'i16.png')
    assert Image.open(tmp_path / 'i16.png').mode.startswith('I')
    assert np.asarray(open_image(tmp_path / 'i16.png'))[..., 0].tolist() == [[0, 4], [128, 255]]
    Image.fromarray(np.array([[-5, 0], [10, 15]], np.int32), 'I').save(tmp_path / 'i32.tif')
    assert np.asarray(open_image(tmp_path / 'i32.tif'))[..., 0].tolist() == [[0, 64], [191, 255]]
    Image.fromarray(np.array([[0, .5], [1, 1]], np.float32), 'F').save(tmp_path / 'f.tif')
    assert np.asarray(open_image(tmp_path / 'f.tif'))[..., 1].tolist() == [[0, 128], [255, 255]]


def test_open_image_applies_exif_orientation(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # stored landscape: left red, right blue
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(a).save(tmp_path / 'rot.jpg', exif=exif.tobytes(), quality=95)
    im = np.asarray(open_image(tmp_path / 'rot.jpg'))
    assert im.shape == (40, 20, 3)
    assert im[2, 10, 0] > 200 and im[-3, 10, 2] > 200  # red on top, blue below


def test_open_image_draft_keeps_both_sides_at_least_draft_size(tmp_path):
    f = write(tmp_path / 'a.jpg', jpeg_bytes((400, 300)))
    assert open_image(f).size == (400, 300)
    assert open_image(f, draft_size=140).size == (200, 150)
    assert open_image(f, draft_size=70).size == (100, 75)
    assert open_image(f, draft_size=200).size == (400, 300)
    png = tmp_path / 'a.png'
    Image.open(f).save(png)
    assert open_image(png, draft_size=70).size == (400, 300)


def test_open_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / 'missing.jpg')
    bad = write(tmp_path / 'bad.jpg', b'\xff\xd8\xff garbage')
    with pytest.raises(BadImageError, match=r"bad\.jpg.*corrupt, truncated or not an image"):
        open_image(bad)


# ---------------------------------------------------------------- resize

def resize_folder(tmp_path):
    root = tmp_path / 'd'
    for split, cls, i, sz in [('train', 'a', 0, (120, 80)), ('train', 'a', 1, (60, 90)),
                              ('train', 'b', 0, (30, 20)), ('valid', 'a', 0, (100, 100)),
                              ('valid', 'b', 0, (200, 50)), ('test', None, 0, (90, 45))]:
        parts = [split, cls] if cls else [split]
        write(root.joinpath(*parts, f'{i}.jpg'), jpeg_bytes(sz, seed=i))
    return root


def test_resize_shorter_side_copy_small_and_keep_path(tmp_path):
    root = resize_folder(tmp_path)
    data = ImageClassifierData.from_paths(root, bs=2, tfms=STUBS, test_name='test', num_workers=0)
    out = tmp_path / 'out'
    before = snapshot(root)
    small = data.resize(40, out)
    assert snapshot(root) == before  # the user's folder is only read
    assert small.path == root and small.trn_ds.root == out / '40' and small.classes == data.classes
    for ds, new in ((data.trn_ds, small.trn_ds), (data.val_ds, small.val_ds),
                    (data.test_ds, small.test_ds)):
        assert new.fnames == ds.fnames and new.y.tolist() == ds.y.tolist()
        assert new.transform is ds.transform
    sizes = {f: Image.open(out / '40' / f).size for f in data.trn_ds.fnames + data.val_ds.fnames}
    assert sizes == {'train/a/0.jpg': (60, 40), 'train/a/1.jpg': (40, 60),
                     'train/b/0.jpg': (30, 20), 'valid/a/0.jpg': (40, 40),
                     'valid/b/0.jpg': (160, 40)}
    assert (out / '40/train/b/0.jpg').read_bytes() == (root / 'train/b/0.jpg').read_bytes()
    assert next(iter(small.aug_dl))[0].min() >= 10 and len(small.test_ds) == 1


def test_resize_relative_path_resumes_file_by_file(tmp_path):
    root = resize_folder(tmp_path)
    data = ImageClassifierData.from_paths(root, num_workers=0)
    data.resize(40)
    done = snapshot(root / 'tmp' / '40')
    (root / 'tmp/40/train/a/1.jpg').unlink()  # as if interrupted before this file
    src = root / 'valid/b/0.jpg'
    os.utime(src, ns=(src.stat().st_atime_ns, done['valid/b/0.jpg'] + 10 ** 9))  # edited since
    again = data.resize(40, 'tmp')
    now = snapshot(root / 'tmp' / '40')
    assert again.trn_ds.root == root / 'tmp' / '40' and now.keys() == done.keys()
    changed = {k for k in done if now[k] != done[k] and k.endswith('.jpg')}
    assert changed == {'train/a/1.jpg', 'valid/b/0.jpg'}
    assert not [p for p in (root / 'tmp').rglob('.*')]  # no temporary files left


def test_resize_reports_failures_and_leaves_them_out(tmp_path):
    root = resize_folder(tmp_path)
    good = jpeg_bytes((80, 80))
    write(root / 'train' / 'b' / 'trunc.jpg', good[:len(good) // 2])
    data = ImageClassifierData.from_paths(root, num_workers=0)
    with pytest.warns(UserWarning, match=r"resize failed for 1 of 6 file\(s\).*train/b/trunc\.jpg"):
        small = data.resize(40, tmp_path / 'out')
    assert 'train/b/trunc.jpg' not in small.trn_ds.fnames and len(small.trn_ds) == 3
    assert not (tmp_path / 'out/40/train/b/trunc.jpg').exists()
    assert not [p for p in (tmp_path / 'out').rglob('*.part')]


def test_resize_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    src = write(tmp_path / 'a.jpg', jpeg_bytes((80, 60)))
    dst = tmp_path / 'out' / 'a.jpg'

    def fail(self, fp, *args, **kwargs):
        fp.write(b'\xff\xd8 half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, 'save', fail)
    with pytest.raises(KeyboardInterrupt):
        resize_file(src, dst, 30)
    assert list((tmp_path / 'out').iterdir()) == []


def test_resize_unwritable_destination_says_what_to_do(tmp_path):
    root = resize_folder(tmp_path)
    data = ImageClassifierData.from_paths(root, num_workers=0)
    write(root / 'tmp', b'a file where the folder would go')
    with pytest.raises(OSError, match=r"cannot write resized copies under .*absolute new_path"):
        data.resize(40)
    arrays = ImageClassifierData.from_arrays(tmp_path, (np.zeros((2, 3)), np.zeros(2)),
                                             (np.zeros((2, 3)), np.zeros(2)))
    with pytest.raises(ValueError, match='resize works on image files'):
        arrays.resize(40)


# ---------------------------------------------------------------- real photos

@pytest.mark.slow
def test_dogscats_from_paths(dogscats):
    from fastlearn.transforms import imagenet_stats, tfms_from_stats, transforms_side_on
    tfms = tfms_from_stats(imagenet_stats, 64, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(dogscats, bs=16, tfms=tfms, num_workers=2)
    assert data.classes == ['cats', 'dogs'] and data.c == 2 and data.path == dogscats
    assert (len(data.trn_ds), len(data.val_ds)) == (1302, 300)
    assert np.bincount(data.trn_y).tolist() == [558, 744]
    assert np.bincount(data.val_y).tolist() == [150, 150]
    x, y = next(iter(data.val_dl))
    assert x.shape == (16, 3, 64, 64) and x.dtype == torch.float32 and y.tolist() == [0] * 16
    assert -2.2 < x.min() < 0 < x.max() < 2.7  # ImageNet-normalised
    x, y = next(iter(data.trn_dl))
    assert x.shape == (16, 3, 64, 64) and set(y.tolist()) <= {0, 1}
    assert data.val_ds.denorm(x).shape == (16, 64, 64, 3)


# ---------------------------------------------------------------- CSV faults (issue 9)

def test_csv_repeated_id_is_refused_naming_the_lines(tmp_path):
    root, csv_path = csv_folder(tmp_path, 6)
    write_csv(csv_path, 'id,label\nid0,cat\nid1,dog\nid2,cat\nid1,cat\nid3,dog\n')
    with pytest.raises(ValueError, match=r"labels\.csv: file id 'id1' appears on lines \[3, 5\] with "
                                         r"conflicting labels \(line 3: dog, line 5: cat\).*leak.*one row "
                                         r"per id"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    write_csv(csv_path, 'id,label\nid0,cat\nid1,dog\n./id0,cat\nid3,dog\n')  # the same file, spelt twice
    with pytest.raises(ValueError, match=r"file id 'id0' appears on lines \[2, 4\] with the same labels"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])


def test_csv_id_outside_the_folder_is_refused(tmp_path):
    root, csv_path = csv_folder(tmp_path, 4)
    secret = tmp_path / 'outside' / 'secret.png'
    secret.parent.mkdir()
    noise_image((200, 40, 40)).save(secret)
    for fid in ('../../outside/secret', '../imgs/../../outside/secret', 'sub/../../x', '../x'):
        write_csv(csv_path, f'id,label\nid0,cat\nid1,dog\n{fid},cat\nid3,dog\n')
        with pytest.raises(ValueError, match=rf"labels\.csv, line 4: file id '{re.escape(fid)}' points "
                                             r"outside .*imgs; ids name files inside that folder"):
            ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    (root / 'imgs' / 'sub').mkdir()
    os.replace(root / 'imgs' / 'id3.png', root / 'imgs' / 'sub' / 'id3.png')
    write_csv(csv_path, 'id,label\nid0,cat\nid1,dog\nid2,cat\nsub/../sub/id3,dog\n')
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    assert 'imgs/sub/../sub/id3.png' in data.trn_ds.fnames   # inside the folder: fine
    flat = ImageClassifierData.from_csv(root / 'imgs', '.', csv_path, suffix='.png', val_idxs=[0])
    assert len(flat.trn_ds) == 3                             # folder='.' still works


def test_csv_label_seen_only_in_validation_is_refused(tmp_path):
    root, csv_path = csv_folder(tmp_path, 5, ['a b', 'b', 'c', 'a', 'b'])
    with pytest.raises(ValueError, match=r"labels\.csv: label\(s\) \['c'\] appear only in validation "
                                         r"rows \(e\.g\. 'c' on line\(s\) \[4\]\).*choose val_idxs"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[2])
    root2, csv2 = csv_folder(tmp_path / 'single', 4, ['cat', 'dog', 'cat', 'cat'])
    with pytest.raises(ValueError, match=r"label\(s\) \['dog'\] appear only in validation rows"):
        ImageClassifierData.from_csv(root2, 'imgs', csv2, suffix='.png', val_idxs=[1])
    ok = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[3])
    assert ok.trn_y.sum(0).tolist() == [1, 3, 1]


@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf', 'NaN'])
def test_csv_regression_refuses_non_finite_values(tmp_path, bad):
    root, csv_path = csv_folder(tmp_path, 4, ['1', '2', bad, '4'])
    with pytest.raises(ValueError, match=rf"labels\.csv, line 4: \['{bad}'\] is not finite.*fill in "
                                         r"the value or remove the row"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0],
                                     continuous=True)


def test_arrays_regression_refuses_non_finite_targets():
    x = np.zeros((4, 8, 8, 3), np.uint8)
    y = np.array([1.0, np.nan, 2.0, 3.0], np.float32)
    with pytest.raises(ValueError, match=r"y has 1 non-finite value\(s\) \(nan or inf; the first in "
                                         r"row 1\)"):
        ImageClassifierData.from_arrays('.', (x, y), (x, np.ones(4)), continuous=True)


# ---------------------------------------------------------------- odd entries in folders (issue 9)

def test_broken_and_looping_symlinks_are_counted_like_any_unusable_file(image_folder):
    ants = image_folder / 'train' / 'ants'
    os.symlink(ants / 'gone.png', ants / 'dangling.png')
    os.symlink('loop.png', ants / 'loop.png')                  # points at itself: ELOOP
    os.symlink(ants / 'ants_000.png', ants / 'good_link.png')  # a working link is an image
    os.symlink('self_dir', image_folder / 'train' / 'self_dir')  # a looping "class folder"
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) under .*not usable images: "
                                         r"train/ants/dangling\.png \(broken symbolic link: its target "
                                         r"does not exist\); train/ants/loop\.png \(cannot be read: "
                                         r"Too many levels of symbolic links\)"):
        data = ImageClassifierData.from_paths(image_folder, num_workers=0)
    assert len(data.trn_ds) == 25 and 'train/ants/good_link.png' in data.trn_ds.fnames
    assert data.classes == ['ants', 'bees']
    with pytest.raises(BadImageError, match=r'2 file\(s\) under .*dangling\.png.*loop\.png'):
        ImageClassifierData.from_paths(image_folder, on_bad_file='raise')


def test_csv_rows_naming_broken_or_looping_links_follow_the_policy(tmp_path):
    root, csv_path = csv_folder(tmp_path, 6)
    (root / 'imgs' / 'id2.png').unlink()
    os.symlink(root / 'imgs' / 'gone.png', root / 'imgs' / 'id2.png')
    (root / 'imgs' / 'id3.png').unlink()
    os.symlink('id3.png', root / 'imgs' / 'id3.png')
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*imgs/id2\.png \(broken symbolic "
                                         r"link.*imgs/id3\.png \(cannot be read: Too many levels"):
        data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    assert len(data.trn_ds) == 3 and len(data.val_ds) == 1


def test_a_file_name_that_is_not_utf8_trains_and_precomputes(image_folder, tiny_arch):
    from fastlearn.conv_learner import ConvLearner, tfms_from_model
    src = image_folder / 'train' / 'ants' / 'ants_000.png'
    odd = os.fsencode(src.parent) + b'/caf\xe9 \x81.png'         # cp1252 bytes from a Windows zip
    os.rename(os.fsencode(src), odd)
    data = ImageClassifierData.from_paths(image_folder, bs=8, num_workers=0,
                                          tfms=tfms_from_model(tiny_arch, 32))
    name = os.fsdecode(odd)[len(str(image_folder)) + 1:]
    assert name in data.trn_ds.fnames
    fp = data.trn_ds.fingerprint()                             # the precompute key
    os.utime(odd, ns=(0, 0))
    assert data.trn_ds.fingerprint() != fp
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = ConvLearner.pretrained(tiny_arch, data, precompute=True, device='cpu', quiet=True)
    learn.fit(1e-2, 1)
    assert learn.activations('trn').shape == (24, 64)


# ---------------------------------------------------------------- images too large to decode whole

def test_large_images_decode_at_reduced_size_or_are_refused(tmp_path, monkeypatch):
    from fastlearn import images
    from fastlearn.images import TooLargeImageError
    monkeypatch.setattr(images, 'MAX_PIXELS', 100 * 80)         # stands in for 50 MP
    jpg = write(tmp_path / 'big.jpg', jpeg_bytes((400, 320)))   # 16x the limit: 1/4 scale fits
    assert open_image(jpg).size == (100, 80)
    assert open_image(jpg, draft_size=30).size == (50, 40)      # draft_size asks for less: 1/8
    huge = write(tmp_path / 'huge.jpg', jpeg_bytes((1200, 960)))  # 1/8 is still 2.25x the limit
    png = tmp_path / 'big.png'
    Image.fromarray(np.zeros((320, 400, 3), np.uint8)).save(png)
    for f, wh in ((huge, '1200x960'), (png, '400x320')):
        with pytest.raises(TooLargeImageError, match=rf"image '.*{f.name}' is {wh} pixels .* above "
                                                     r"the 0 MP that fastlearn decodes at once.*"
                                                     r"raise fastlearn\.images\.MAX_PIXELS"):
            open_image(f)
    assert open_image(jpg).size == (100, 80)                    # files untouched, still readable
    monkeypatch.setattr(images, 'MAX_PIXELS', 400 * 320)
    assert open_image(png).size == (400, 320)                   # at the limit: decoded whole


def test_a_too_large_file_in_a_folder_follows_the_bad_file_policy(image_folder, monkeypatch):
    from fastlearn import images
    monkeypatch.setattr(images, 'MAX_PIXELS', 40 * 40)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image_folder / 'train' / 'ants' / 'x.png')
    with pytest.warns(UserWarning, match=r"skipped 1 file.*train/ants/x\.png \(image .* is 64x64 "
                                         r"pixels"):
        data = ImageClassifierData.from_paths(image_folder, check_images=True, num_workers=0)
    assert 'train/ants/x.png' not in data.trn_ds.fnames and len(data.trn_ds) == 24


def test_fingerprint_sees_a_file_replaced_with_the_same_size_and_mtime(image_folder):
    data = ImageClassifierData.from_paths(image_folder)
    f = image_folder / data.trn_ds.fnames[0]
    before, st = f.read_bytes(), f.stat()
    fp = data.trn_ds.fingerprint()
    time.sleep(0.01)  # a later ctime, even on filesystems with coarse timestamps
    for replace_by_rename in (False, True):
        other = bytearray(before)
        other[-20] ^= 0xFF                         # same size, other pixels
        if replace_by_rename:                      # cp over / rsync: a new inode
            tmp = f.with_name('tmp.bin')
            tmp.write_bytes(bytes(other))
            os.replace(tmp, f)
        else:                                      # rewritten in place
            f.write_bytes(bytes(other))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored, as `touch -r` does
        assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
        assert data.trn_ds.fingerprint() != fp
        fp = data.trn_ds.fingerprint()
    assert data.trn_ds.fingerprint() == fp         # and stable while nothing changes


def test_csv_with_windows_bytes_or_utf16_is_read_or_named(tmp_path):
    root, csv_path = csv_folder(tmp_path, 4)
    odd = os.fsencode(root / 'imgs') + b'/caf\xe9.png'            # a cp1252 name from a zip
    os.rename(os.fsencode(root / 'imgs' / 'id3.png'), odd)
    csv_path.write_bytes(b'id,label\nid0,cat\nid1,dog\nid2,cat\ncaf\xe9,dog\n')  # cp1252, not UTF-8
    data = ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    assert os.fsencode(root / data.trn_ds.fnames[-1]) == odd    # the id found its file
    csv_path.write_text('id,label\nid0,cat\nid1,dog\n', encoding='utf-16')  # Excel "Unicode text"
    with pytest.raises(ValueError, match=r"labels\.csv is not a UTF-8 text file \(it holds NUL "
                                         r"bytes: UTF-16, or binary\); save it as 'CSV UTF-8'"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])
    csv_path.write_text('id,label\nid0,cat\nid1,"' + 'x' * 200_000 + '"\n')   # csv's field limit
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: cannot be read as CSV \(field larger "
                                         r"than field limit"):
        ImageClassifierData.from_csv(root, 'imgs', csv_path, suffix='.png', val_idxs=[0])


def test_from_arrays_refuses_a_class_seen_only_in_validation(tmp_path):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] \(\['wasps'\]\) have validation examples "
                                         r"but no training example"):
        ImageClassifierData.from_arrays(tmp_path, (x, np.array([0, 1, 0, 1])),
                                        (x, np.array([0, 2, 1, 1])), classes=['ants', 'bees', 'wasps'])
    hot = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have validation examples"):
        ImageClassifierData.from_arrays(tmp_path, (x, hot), (x, np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]))
    ok = ImageClassifierData.from_arrays(tmp_path, (x, np.array([0, 1, 2, 1])), (x, np.array([0, 0, 1, 1])))
    assert ok.c == 3                                 # a class missing from valid only is fine


# ---------------------------------------------------------------- coordinate targets and the decode

def test_coord_targets_scale_with_the_reduced_size_decode(tmp_path):
    from fastlearn.transforms import CropType, TfmType, imagenet_stats, tfms_from_stats
    a = np.zeros((300, 400, 3), np.uint8)
    a[100:200, 160:280] = 255  # the box (top, left, bottom, right) = (100, 160, 200, 280)
    write(tmp_path / 'imgs' / 'a.jpg', b'')
    Image.fromarray(a).save(tmp_path / 'imgs' / 'a.jpg', quality=95)
    Image.fromarray(a).save(tmp_path / 'imgs' / 'b.jpg', quality=95)
    write_csv(tmp_path / 'boxes.csv', 'id,box\na,100 160 200 280\nb,100 160 200 280\n')
    tfms = tfms_from_stats(imagenet_stats, 40, crop_type=CropType.NO, tfm_y=TfmType.COORD)
    data = ImageClassifierData.from_csv(tmp_path, 'imgs', tmp_path / 'boxes.csv', tfms=tfms,
                                        suffix='.jpg', continuous=True, val_idxs=[1],
                                        num_workers=0)
    im = open_image(tmp_path / 'imgs' / 'a.jpg', tfms[1].draft_size)
    assert im.size == (100, 75) and im.info['draft_scale'] == (0.25, 0.25)  # decoded at 1/4
    x, box = data.val_ds[0]
    # squashed from 400x300 to 40x40: y / 7.5, x / 10
    np.testing.assert_allclose(box, [[100 / 7.5, 16, 200 / 7.5, 28]], atol=1e-4)
    light = data.val_ds.denorm(x).mean(-1) > 0.5
    rows, cols = np.nonzero(light)
    np.testing.assert_allclose([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], box[0],
                               atol=1.0)
    assert open_image(tmp_path / 'imgs' / 'a.jpg').info['draft_scale'] == (1.0, 1.0)


def test_coord_targets_follow_a_resized_copy(tmp_path):
    from fastlearn.transforms import CropType, TfmType, imagenet_stats, tfms_from_stats
    a = np.zeros((300, 400, 3), np.uint8)
    a[100:200, 160:280] = 255
    for n in ('a', 'b'):
        write(tmp_path / 'imgs' / f'{n}.png', b'')
        Image.fromarray(a).save(tmp_path / 'imgs' / f'{n}.png')
    write_csv(tmp_path / 'boxes.csv', 'id,box\na,100 160 200 280\nb,100 160 200 280\n')
    tfms = tfms_from_stats(imagenet_stats, 40, crop_type=CropType.NO, tfm_y=TfmType.COORD)
    data = ImageClassifierData.from_csv(tmp_path, 'imgs', tmp_path / 'boxes.csv', tfms=tfms,
                                        suffix='.png', continuous=True, val_idxs=[1],
                                        num_workers=0)
    small = data.resize(60, tmp_path / 'small')
    assert Image.open(small.val_ds.root / small.val_ds.fnames[0]).size == (80, 60)
    _, box = small.val_ds[0]
    np.testing.assert_allclose(box, [[100 / 7.5, 16, 200 / 7.5, 28]], atol=1e-4)


@pytest.mark.parametrize('fmt, name', [('JPEG', 'a.jpg'), ('PNG', 'a.jpg'), ('TGA', 'a.tga'),
                                       ('ICO', 'a.ico'), ('QOI', 'a.qoi'), ('WEBP', 'a.webp'),
                                       ('PPM', 'a.ppm')])
def test_check_image_file_knows_pillows_formats(fmt, name, tmp_path):
    """Pillow's extensions and signatures: more formats than a hand-kept list; a PNG named
    .jpg is an image (Pillow opens by content); TGA, which has no signature, by its header."""
    from fastlearn.images import IMAGE_EXTENSIONS, check_image_file
    path = tmp_path / name
    noise_image((200, 30, 30), 16).save(path, format=fmt)
    assert check_image_file(path) is None
    assert {'.jpg', '.png', '.tga', '.ico', '.qoi', '.webp'} <= IMAGE_EXTENSIONS
    assert not {'.txt', '.h5', '.mpg', '.eps', '.csv'} & IMAGE_EXTENSIONS  # stubs, video, documents
    path.write_bytes(b'\0' * 18 + b'not an image at all')
    assert check_image_file(path) == 'not an image (unrecognised file header)'
