"""plots.py: image grids, the confusion matrix, and ImageModelResults on hand-made predictions
whose answers are known."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt  # conftest has chosen the Agg backend
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from conftest import CLASS_COLOURS, noise_image
from fastlearn.plots import ImageModelResults, plot_confusion_matrix, plots, plots_from_files

CLASSES = ['ants', 'bees', 'cats']
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
# One row per image; the comment is the predicted class and whether it is right.
P = np.array([
    [0.90, 0.05, 0.05],  # 0  ants  ok
    [0.60, 0.30, 0.10],  # 1  ants  ok
    [0.20, 0.70, 0.10],  # 2  bees  wrong, p(true) .2
    [0.10, 0.10, 0.80],  # 3  cats  wrong, p(true) .1
    [0.03, 0.95, 0.02],  # 4  bees  ok
    [0.35, 0.40, 0.25],  # 5  bees  ok, barely
    [0.50, 0.30, 0.20],  # 6  ants  wrong, p(true) .3
    [0.10, 0.80, 0.10],  # 7  bees  ok
    [0.15, 0.05, 0.80],  # 8  cats  ok
    [0.55, 0.10, 0.35],  # 9  ants  wrong, p(true) .35
    [0.05, 0.05, 0.90],  # 10 cats  ok
    [0.75, 0.17, 0.08],  # 11 ants  wrong, p(true) .08
])
CM = np.array([[2, 1, 1],
               [1, 3, 0],
               [2, 0, 2]])


class FakeDS:
    """What ImageModelResults reads from a dataset: fnames under root, y, ds[i], denorm."""

    def __init__(self, root: Path, fnames: list[str], y: np.ndarray) -> None:
        self.root, self.fnames, self.y = root, fnames, y

    def __len__(self) -> int:
        return len(self.fnames)

    def __getitem__(self, i: int):
        a = np.asarray(Image.open(self.root / self.fnames[i]), dtype=np.float32) / 255
        return torch.from_numpy(a).permute(2, 0, 1), self.y[i]

    def denorm(self, x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).numpy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close('all')


@pytest.fixture
def ds(tmp_path) -> FakeDS:
    rng = np.random.default_rng(0)
    fnames = []
    for i, c in enumerate(Y):
        f = f'valid/{CLASSES[c]}/{i:02d}.png'
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        noise_image(CLASS_COLOURS[CLASSES[c]], 16, rng).save(tmp_path / f)
        fnames.append(f)
    return FakeDS(tmp_path, fnames, Y.copy())


@pytest.fixture
def res(ds) -> ImageModelResults:
    return ImageModelResults(ds, np.log(P), classes=CLASSES)


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


# --- plot_confusion_matrix -------------------------------------------------------------------
def test_confusion_matrix_counts_and_cell_text(res, capsys):
    cm = res.confusion_matrix()
    np.testing.assert_array_equal(cm, CM)
    fig = plot_confusion_matrix(cm, CLASSES)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # the matrix and its colour bar
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [str(v) for v in CM.ravel()]
    white = [matplotlib.colors.to_hex(t.get_color()) == '#ffffff' for t in ax.texts]
    assert white == list(CM.ravel() > CM.max() / 2)
    assert (ax.get_ylabel(), ax.get_xlabel(), ax.get_title()) == ('True label', 'Predicted label',
                                                                  'Confusion matrix')
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    assert ax.images[0].get_cmap().name == 'Blues'
    assert capsys.readouterr().out == ''  # prints nothing unless verbose


def test_confusion_matrix_normalized_rows_sum_to_one(capsys):
    cm = np.array([[2, 2], [0, 0]])  # the second class has no examples: a row of zeros, not NaN
    fig = plot_confusion_matrix(cm, ['a', 'b'], normalize=True, title='N', verbose=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ['0.50', '0.50', '0.00', '0.00']
    np.testing.assert_allclose(ax.images[0].get_array().sum(1), [1, 0])
    assert 'Normalized confusion matrix' in capsys.readouterr().out
    fig = ImageModelResults(None, np.log(P), Y, CLASSES).plot_confusion_matrix(normalize=True)
    values = np.array([float(t.get_text()) for t in fig.axes[0].texts]).reshape(3, 3)
    np.testing.assert_allclose(values.sum(1), 1, atol=0.011)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array().sum(1), 1)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r'square.*\(2, 3\)'):
        plot_confusion_matrix(np.zeros((2, 3)), ['a', 'b'])
    with pytest.raises(ValueError, match='classes has 2 names but cm is 3x3'):
        plot_confusion_matrix(CM, ['a', 'b'])


# --- choosing images -------------------------------------------------------------------------
def test_basic_attributes(res):
    np.testing.assert_allclose(res.probs, P)
    np.testing.assert_array_equal(res.preds, P.argmax(1))
    np.testing.assert_array_equal(res.y, Y)
    np.testing.assert_array_equal(res.is_correct, [1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    assert repr(res) == 'ImageModelResults: 12 images, 3 classes, accuracy 0.5833'


def test_most_incorrect_is_most_confidently_wrong_first(res):
    np.testing.assert_array_equal(res.most_incorrect(0), [3, 2])
    np.testing.assert_array_equal(res.most_incorrect('cats'), [11, 9])
    np.testing.assert_array_equal(res.most_incorrect(1), [6])
    np.testing.assert_array_equal(res.most_incorrect(2, n=1), [11])


def test_most_correct_and_most_uncertain(res):
    np.testing.assert_array_equal(res.most_correct(1), [4, 7, 5])
    np.testing.assert_array_equal(res.most_correct('bees', n=2), [4, 7])
    np.testing.assert_array_equal(res.most_correct(0), [0, 1])
    # predicted ants: 0 (.90), 1 (.60), 6 (.50), 9 (.55), 11 (.75); closest to 1/3 first
    np.testing.assert_array_equal(res.most_uncertain(0, n=5), [6, 9, 1, 11, 0])
    np.testing.assert_array_equal(res.most_uncertain('ants'), [6, 9, 1, 11])
    np.testing.assert_array_equal(res.most_uncertain(1), [5, 2, 7, 4])


def test_random_picks_use_a_local_generator(res):
    state = np.random.get_state()
    right, wrong = res.random_correct(n=3), res.random_incorrect(n=10)
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert len(right) == 3 and set(right) <= set(np.flatnonzero(res.is_correct))
    assert sorted(wrong) == [2, 3, 6, 9, 11]  # all five, asked for more
    np.testing.assert_array_equal(res.random_correct(n=3), right)  # same seed, same pick
    assert len(res.random_correct(n=0)) == 0


def test_most_confused_order_and_counts(res):
    assert res.most_confused() == [('cats', 'ants', 2), ('ants', 'bees', 1), ('ants', 'cats', 1),
                                   ('bees', 'ants', 1)]
    assert res.most_confused(min_val=2) == [('cats', 'ants', 2)]
    assert res.most_confused(min_val=3) == []


def test_top_losses_is_nll_of_true_class_sorted(res):
    losses, idxs = res.top_losses()
    np.testing.assert_array_equal(idxs[:6], [11, 3, 2, 6, 9, 5])
    assert len(idxs) == 12 and sorted(idxs) == list(range(12))
    np.testing.assert_allclose(losses, -np.log(P[idxs, Y[idxs]]))
    assert np.all(np.diff(losses) <= 0)
    losses3, idxs3 = res.top_losses(3)
    np.testing.assert_array_equal(idxs3, [11, 3, 2])
    np.testing.assert_allclose(losses3, -np.log([0.08, 0.10, 0.20]))


def test_tta_stack_averages_probabilities_not_log_probabilities():
    stack = np.array([[0.90, 0.09, 0.01], [0.02, 0.60, 0.38], [0.60, 0.30, 0.10]])[:, None]
    assert np.log(stack).mean(0).argmax() == 1  # averaging log-probs would say class 1...
    r = ImageModelResults(None, torch.log(torch.tensor(stack)), y=[0], classes=['a', 'b', 'c'])
    np.testing.assert_allclose(r.probs, [[1.52 / 3, 0.99 / 3, 0.49 / 3]])
    assert r.preds[0] == 0 and r.is_correct[0]  # ...the course averages probabilities: class 0
    np.testing.assert_allclose(r.top_losses()[0], [-np.log(1.52 / 3)])
    r = ImageModelResults(None, stack, y=[0], classes=['a', 'b', 'c'], is_log=False)
    np.testing.assert_allclose(r.probs, [[1.52 / 3, 0.99 / 3, 0.49 / 3]])


def test_classification_report(res):
    report = res.classification_report()
    assert all(c in report for c in CLASSES) and 'precision' in report


# --- image plots -----------------------------------------------------------------------------
def test_plots_grid_of_arrays_and_tensors(tmp_path):
    ims = [np.full((8, 8, 3), 0.5), np.zeros((8, 8), np.uint8), torch.rand(3, 8, 8), torch.rand(1, 8, 8)]
    fig = plots(ims, rows=2, titles=['a', 'b', 'c', 'd'], maintitle='main')
    assert isinstance(fig, Figure) and len(fig.axes) == 4 and titles(fig) == ['a', 'b', 'c', 'd']
    assert fig.get_suptitle() == 'main'
    assert [ax.images[0].get_array().shape for ax in fig.axes] == [(8, 8, 3), (8, 8), (8, 8, 3), (8, 8)]
    assert fig.axes[3].get_subplotspec().get_geometry()[:2] == (2, 2)
    fig.savefig(tmp_path / 'grid.png')
    assert (tmp_path / 'grid.png').read_bytes()[:4] == b'\x89PNG'
    assert len(plots(torch.rand(5, 3, 8, 8)).axes) == 5  # a NCHW batch
    with pytest.raises(ValueError, match='titles has 1 entries but ims has 4 images'):
        plots(ims, titles=['a'])
    with pytest.raises(ValueError, match='ims is empty'):
        plots([])


def test_plots_from_files(ds):
    paths = [ds.root / f for f in ds.fnames[:3]]
    fig = plots_from_files(paths, titles=['x', 'y', 'z'], maintitle='m')
    assert len(fig.axes) == 3 and titles(fig) == ['x', 'y', 'z']
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), np.asarray(Image.open(paths[0])))
    missing = ds.root / 'valid' / 'nope.png'
    with pytest.raises(FileNotFoundError, match='nope.png'):
        plots_from_files([paths[0], missing])


def test_plot_most_incorrect_shows_the_original_files(res, ds, tmp_path):
    fig = res.plot_most_incorrect(0)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.get_suptitle() == 'Most incorrect ants'
    assert titles(fig) == ['cats 0.80\n(true: ants)', 'bees 0.70\n(true: ants)']
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(),
                                  np.asarray(Image.open(ds.root / ds.fnames[3])))
    fig.savefig(tmp_path / 'wrong.png')
    assert (tmp_path / 'wrong.png').stat().st_size > 0


def test_plot_most_correct_uncertain_and_val_with_title(res):
    fig = res.plot_most_correct('bees')
    assert fig.get_suptitle() == 'Most correct bees' and len(fig.axes) == 3
    assert titles(fig)[0] == 'bees 0.95\n(true: bees)'
    fig = res.plot_most_uncertain(0, n=2)
    assert fig.get_suptitle() == 'Most uncertain ants' and len(fig.axes) == 2
    fig = res.plot_val_with_title(res.random_incorrect(), 'Wrong')
    assert len(fig.axes) == 4 and fig.get_suptitle() == 'Wrong'
    empty = res.plot_val_with_title([], 'Nothing')
    assert isinstance(empty, Figure) and len(empty.axes) == 0
    assert 'Not found.' in [t.get_text() for t in empty.texts] and empty.get_suptitle() == 'Nothing'


def test_transformed_images_come_from_ds_denorm(res, ds):
    fig = res.plot_val_with_title([4], 'x', transformed=True)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), ds.denorm(ds[4][0]))
    with pytest.raises(ValueError, match='denorm'):
        ImageModelResults(SimpleNamespace(y=Y), np.log(P)).plot_val_with_title([0], 'x', transformed=True)
    with pytest.raises(ValueError, match='fnames and root'):
        ImageModelResults(None, np.log(P), Y).plot_most_correct(0)


def test_plot_top_losses_titles(res, tmp_path):
    fig = res.plot_top_losses(4)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert fig.get_suptitle() == 'Prediction/Actual/Loss/Probability'
    assert titles(fig)[:2] == ['ants/cats / 2.53 / 0.75', 'cats/ants / 2.30 / 0.80']
    assert fig.axes[3].get_subplotspec().get_geometry()[:2] == (2, 2)
    fig.savefig(tmp_path / 'top.png')
    fig = res.plot_top_losses()
    assert len(fig.axes) == 9 and fig.axes[8].get_subplotspec().get_geometry()[:2] == (3, 3)


# --- from_learner and validation -------------------------------------------------------------
class FakeLearner:
    """The learner contract: predict_with_targs / TTA return numpy (log-preds, targets)."""

    def __init__(self, ds: FakeDS) -> None:
        self.data = SimpleNamespace(val_ds=ds, test_ds=None, classes=CLASSES, is_multi=False, is_reg=False)
        self.calls: list[tuple] = []

    def predict_with_targs(self, is_test: bool = False):
        self.calls.append(('predict_with_targs', is_test))
        return np.log(P).astype(np.float32), Y.copy()

    def TTA(self, n_aug: int = 4, is_test: bool = False):
        self.calls.append(('TTA', is_test))
        return np.log(np.stack([P, P[:, [1, 0, 2]]])).astype(np.float32), Y.copy()


def test_from_learner(ds):
    learn = FakeLearner(ds)
    r = ImageModelResults.from_learner(learn)
    assert learn.calls == [('predict_with_targs', False)] and r.ds is ds and r.classes == CLASSES
    np.testing.assert_allclose(r.probs, P, rtol=1e-6)
    r = ImageModelResults.from_learner(learn, tta=True)
    assert learn.calls[-1] == ('TTA', False)
    np.testing.assert_allclose(r.probs, (P + P[:, [1, 0, 2]]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match='no test_ds'):
        ImageModelResults.from_learner(learn, is_test=True)
    learn.data.is_multi = True
    with pytest.raises(ValueError, match='multi-label'):
        ImageModelResults.from_learner(learn)


def test_bad_shapes_raise_with_the_numbers(ds):
    lp = np.log(P)
    with pytest.raises(ValueError, match=r'log_preds must be \(N, C\).*\(12,\)'):
        ImageModelResults(ds, lp[:, 0])
    with pytest.raises(ValueError, match='classes has 3 names but log_preds has 4 columns'):
        ImageModelResults(ds, np.log(np.full((12, 4), 0.25)), classes=CLASSES)
    with pytest.raises(ValueError, match=r'log_preds has 11 rows but y has shape \(12,\)'):
        ImageModelResults(None, lp[:11], Y)
    with pytest.raises(ValueError, match='log_preds has 11 rows but ds has 12 files'):
        ImageModelResults(ds, lp[:11], Y[:11])
    with pytest.raises(ValueError, match='y has labels from 0 to 3 but log_preds has 3 classes'):
        ImageModelResults(None, lp, np.r_[Y[:-1], 3])
    with pytest.raises(ValueError, match=r'not log-probabilities.*is_log=False'):
        ImageModelResults(ds, P)
    with pytest.raises(ValueError, match='is_log=True'):
        ImageModelResults(ds, lp, is_log=False)
    with pytest.raises(ValueError, match='pass the labels'):
        ImageModelResults(None, lp)
    res = ImageModelResults(ds, lp, classes=CLASSES)
    with pytest.raises(ValueError, match=r'y_cls is 3 but there are 3 classes \(0 to 2\)'):
        res.most_incorrect(3)
    with pytest.raises(ValueError, match="'wasps' is not one of the classes"):
        res.most_correct('wasps')
    with pytest.raises(ValueError, match='k must be 0 or more; got -1'):
        res.top_losses(-1)


def test_default_classes_and_import_stays_light(ds):
    assert ImageModelResults(ds, np.log(P)).classes == [0, 1, 2]
    code = "import sys, fastlearn.plots; sys.exit('matplotlib' in sys.modules or 'sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, '-c', code], cwd=Path(__file__).parents[1]).returncode == 0
