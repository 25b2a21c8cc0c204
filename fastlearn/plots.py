"""Looking at images and at what a classifier got wrong: image grids, the confusion matrix and
`ImageModelResults`, the course's interpretation object.

    plots(ims, rows=2, titles=titles)
    plot_confusion_matrix(confusion_matrix(y, preds), data.classes)
    res = ImageModelResults.from_learner(learn, tta=True)
    res.plot_most_incorrect('cats'); res.most_confused(); res.plot_top_losses(9)

Every plot is a pyplot figure and is returned: Jupyter's inline backend draws it at the end of
the cell, a script can `plt.show()` it, and `fig.savefig(path)` works headless (Agg). Nothing
here calls `plt.show()` or closes a figure, and a plot on a cell's last line is drawn once
(`core.subplots`). matplotlib is imported inside the functions, so `import fastlearn.plots`
stays quick.
"""
from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .core import figure, subplots, to_np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ['plots', 'plots_from_files', 'plot_confusion_matrix', 'ImageModelResults']


def _as_image(im: Any) -> np.ndarray:
    """An image imshow can draw: HWC or HW, uint8 or float in [0, 1]."""
    chw = isinstance(im, torch.Tensor)  # tensors come out of datasets channels-first
    a = to_np(im)
    if a.ndim == 3 and (chw or (a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4))):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"ims: each image must be HWC, HW or a CHW tensor; got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.clip(a.astype(np.float32), 0, 1)  # float noise past 1 would only raise a warning


def plots(ims: Sequence[Any] | np.ndarray | torch.Tensor, figsize: tuple[float, float] = (12, 6),
          rows: int = 1, titles: Sequence[str] | None = None, maintitle: str | None = None, *,
          interp: bool = False) -> Figure:
    """A grid of images, one axis each, as the course shows a batch:

        plots(ims, rows=2, titles=[data.classes[c] for c in y])

    `ims`: HWC arrays (floats in [0, 1] or uint8), HW greyscale arrays or CHW tensors (a NCHW
    batch works too). `interp=True` smooths the pixels when the image is scaled.
    """
    ims = [_as_image(im) for im in ims]
    if not ims:
        raise ValueError("ims is empty: there is nothing to plot")
    if titles is not None and len(titles) != len(ims):
        raise ValueError(f"titles has {len(titles)} entries but ims has {len(ims)} images")
    if int(rows) < 1:
        raise ValueError(f"rows must be at least 1; got {rows}")
    cols = math.ceil(len(ims) / rows)
    fig = figure(figsize=figsize)
    for i, im in enumerate(ims):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis('off')
        ax.imshow(im, cmap='gray' if im.ndim == 2 else None, interpolation=None if interp else 'none')
        if titles is not None:
            ax.set_title(titles[i], fontsize=12)
    if maintitle is not None:
        fig.suptitle(maintitle, fontsize=16)
    return fig


def _open_rgb(path: str | Path) -> np.ndarray:
    """An image file as an HWC uint8 RGB array, turned upright as its EXIF tag says."""
    from PIL import Image, ImageOps
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, 'no image file at this path', str(path))
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert('RGB'))


def plots_from_files(paths: Sequence[str | Path], figsize: tuple[float, float] = (10, 5),
                     rows: int = 1, titles: Sequence[str] | None = None,
                     maintitle: str | None = None) -> Figure:
    """`plots` for image files, read with PIL (the course's `plots_from_files`):

        plots_from_files([f'{PATH}valid/cats/{f}' for f in files[:4]], titles=files[:4])

    A missing file raises FileNotFoundError naming it.
    """
    return plots([_open_rgb(p) for p in paths], figsize, rows, titles, maintitle)


def plot_confusion_matrix(cm: Any, classes: Sequence[Any], normalize: bool = False,
                          title: str = 'Confusion matrix', cmap: Any = None,
                          figsize: tuple[float, float] | None = None, *,
                          verbose: bool = False) -> Figure:
    """Draw a confusion matrix with its counts written in the cells, as lesson 1 does:

        cm = confusion_matrix(y, preds)
        plot_confusion_matrix(cm, data.classes)

    Rows are the true labels, columns the predictions (scikit-learn's layout). `normalize=True`
    divides each row by its total (a class with no examples keeps a row of zeros); `verbose=True`
    also prints the matrix, as the course did. `cmap` defaults to 'Blues'.
    """
    cm = to_np(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (C, C) matrix; got shape {cm.shape}")
    n = cm.shape[0]
    if len(classes) != n:
        raise ValueError(f"classes has {len(classes)} names but cm is {n}x{n}; pass one name per class")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals != 0)
    if verbose:
        print('Normalized confusion matrix' if normalize else 'Confusion matrix, without normalization')
        print(cm)
    if n == 0:
        raise ValueError('cm is empty (0x0): there is nothing to plot')
    from sklearn.metrics import ConfusionMatrixDisplay  # matrix, colour bar, counts, axis labels
    fig, ax = subplots(figsize=figsize)
    disp = ConfusionMatrixDisplay(cm, display_labels=[str(c) for c in classes]).plot(
        ax=ax, cmap=cmap or 'Blues', xticks_rotation=45,
        values_format='d' if np.issubdtype(cm.dtype, np.integer) else '.2f')
    # The course's look: white counts on the darker half of the scale, black elsewhere (scikit-
    # learn takes the colour map's ends, near-white on 'Blues'); tick labels end at their tick.
    for (i, j), text in np.ndenumerate(disp.text_):
        text.set_color('white' if cm[i, j] > cm.max() / 2 else 'black')
    for label in ax.get_xticklabels():
        label.set_horizontalalignment('right')
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _probs(log_preds: Any, is_log: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, log-probabilities), both (N, C), from (N, C) or TTA's (n_aug+1, N, C)
    predictions; a TTA stack averages the probabilities, as the course does."""
    lp = to_np(log_preds).astype(np.float64)
    if lp.ndim not in (2, 3):
        raise ValueError(f"log_preds must be (N, C), or (n_aug+1, N, C) from TTA; got shape {lp.shape}")
    if is_log and lp.size and lp.max() > 1e-4:
        raise ValueError(f"log_preds has values above 0 (max {lp.max():.3g}), so they are not "
                         "log-probabilities; pass is_log=False for probabilities")
    if not is_log and lp.size and lp.min() < -1e-6:
        raise ValueError(f"log_preds has negative values (min {lp.min():.3g}) with is_log=False; "
                         "pass is_log=True for log-probabilities")
    if is_log and lp.ndim == 2:
        return np.exp(lp), lp  # keep the log-probabilities: exp then log would lose the tail
    probs = np.exp(lp) if is_log else lp
    probs = probs.mean(0) if lp.ndim == 3 else probs
    return probs, np.log(np.maximum(probs, np.finfo(np.float64).tiny))


class ImageModelResults:
    """What a single-label classifier got right and wrong, image by image (the course's
    interpretation object; fastai 2 calls it `ClassificationInterpretation`):

        log_preds, y = learn.TTA()
        res = ImageModelResults(data.val_ds, log_preds)   # or .from_learner(learn, tta=True)
        res.plot_most_incorrect(0); res.plot_confusion_matrix(); res.most_confused()

    `ds` has `fnames` (paths relative to `ds.root`) and `y`; `denorm` and `ds[i] -> (x, y)` are
    only needed for `transformed=True` plots (ds=None with `y` given: the numbers, no images).
    `log_preds` is (N, C) log-probabilities, or the
    (n_aug+1, N, C) stack from `TTA()`, whose *probabilities* are averaged over the first axis as
    the course's `np.mean(np.exp(log_preds), 0)`. Pass `is_log=False` for probabilities.
    Attributes: `probs` (N, C), `preds`, `y`, `is_correct`, `classes`.
    Methods taking `y_cls` accept a class index or a class name.
    """

    def __init__(self, ds: Any, log_preds: Any, y: Any = None, classes: Sequence[Any] | None = None,
                 is_log: bool = True) -> None:
        self.probs, self._logp = _probs(log_preds, is_log)
        n, c = self.probs.shape
        y = getattr(ds, 'y', None) if y is None else y
        if y is None:
            raise ValueError("y: pass the labels, or a ds that has them as ds.y")
        self.y: np.ndarray = to_np(y).astype(np.int64)
        if self.y.shape != (n,):
            raise ValueError(f"log_preds has {n} rows but y has shape {self.y.shape}; "
                             "pass one class index per image")
        if n and not (0 <= self.y.min() and self.y.max() < c):
            raise ValueError(f"y has labels from {self.y.min()} to {self.y.max()} "
                             f"but log_preds has {c} classes")
        fnames = getattr(ds, 'fnames', None)
        if fnames is not None and len(fnames) != n:
            raise ValueError(f"log_preds has {n} rows but ds has {len(fnames)} files; "
                             "predict on this same dataset")
        classes = list(classes if classes is not None else getattr(ds, 'classes', None) or range(c))
        if len(classes) != c:
            raise ValueError(f"classes has {len(classes)} names but log_preds has {c} columns")
        self.ds, self.classes = ds, classes
        self.preds: np.ndarray = self.probs.argmax(1)
        self.is_correct: np.ndarray = self.preds == self.y

    @classmethod
    def from_learner(cls, learn: Any, tta: bool = False, is_test: bool = False) -> ImageModelResults:
        """Predict on the validation set (the test set with `is_test`, whose labels are all 0)
        and wrap the result: `res = ImageModelResults.from_learner(learn, tta=True)`."""
        data = learn.data
        if getattr(data, 'is_multi', False) or getattr(data, 'is_reg', False):
            raise ValueError("learn.data is multi-label or regression; "
                             "ImageModelResults needs single-label classes")
        ds = data.test_ds if is_test else data.val_ds
        if ds is None:
            raise ValueError("is_test=True but learn.data has no test_ds")
        log_preds, y = learn.TTA(is_test=is_test) if tta else learn.predict_with_targs(is_test=is_test)
        return cls(ds, log_preds, y, classes=data.classes)

    def __repr__(self) -> str:
        n, c = self.probs.shape
        acc = f', accuracy {self.is_correct.mean():.4f}' if n else ''
        return f'{type(self).__name__}: {n} images, {c} classes{acc}'

    # --- choosing images (index arrays) -------------------------------------------------------
    def _cls(self, y_cls: int | str) -> int:
        if isinstance(y_cls, str):
            if y_cls not in self.classes:
                raise ValueError(f"y_cls {y_cls!r} is not one of the classes {self.classes}")
            return self.classes.index(y_cls)
        if not 0 <= int(y_cls) < len(self.classes):
            raise ValueError(f"y_cls is {y_cls} but there are {len(self.classes)} classes "
                             f"(0 to {len(self.classes) - 1})")
        return int(y_cls)

    @staticmethod
    def _smallest(mask: np.ndarray, key: np.ndarray, n: int | None) -> np.ndarray:
        """The masked indices with the smallest key first; ties keep index order."""
        if n is not None and n < 0:
            raise ValueError(f"n must be 0 or more; got {n}")
        idxs = np.flatnonzero(mask)
        return idxs[np.argsort(key[idxs], kind='stable')[:n]]

    def most_correct(self, y_cls: int | str, n: int = 4) -> np.ndarray:
        """Images of class `y_cls` predicted right, the most confident first."""
        c = self._cls(y_cls)
        return self._smallest((self.y == c) & self.is_correct, -self.probs[:, c], n)

    def most_incorrect(self, y_cls: int | str, n: int = 4) -> np.ndarray:
        """Images of class `y_cls` predicted wrong, the lowest probability of `y_cls` first."""
        c = self._cls(y_cls)
        return self._smallest((self.y == c) & ~self.is_correct, self.probs[:, c], n)

    def most_uncertain(self, y_cls: int | str, n: int = 4) -> np.ndarray:
        """Images *predicted* as `y_cls` whose probability for it is closest to 1/C (a coin toss
        between all classes; with two classes the course's |p - 0.5|), the closest first."""
        c = self._cls(y_cls)
        return self._smallest(self.preds == c, np.abs(self.probs[:, c] - 1 / self.probs.shape[1]), n)

    def _random(self, mask: np.ndarray, n: int, seed: int | None) -> np.ndarray:
        if n < 0:
            raise ValueError(f"n must be 0 or more; got {n}")
        idxs = np.flatnonzero(mask)
        return np.random.default_rng(seed).choice(idxs, min(n, len(idxs)), replace=False)

    def random_correct(self, n: int = 4, *, seed: int | None = 42) -> np.ndarray:
        """Up to `n` correctly predicted images at random (a local generator: `seed=None` for a
        fresh draw each call; the global numpy state is left alone)."""
        return self._random(self.is_correct, n, seed)

    def random_incorrect(self, n: int = 4, *, seed: int | None = 42) -> np.ndarray:
        """Up to `n` wrongly predicted images at random (see `random_correct`)."""
        return self._random(~self.is_correct, n, seed)

    # --- looking at them ----------------------------------------------------------------------
    def _images(self, idxs: np.ndarray, transformed: bool) -> list[np.ndarray]:
        if transformed:
            if not hasattr(self.ds, 'denorm'):
                raise ValueError("transformed=True needs a ds with denorm(x) and ds[i] -> (x, y)")
            return [self.ds.denorm(self.ds[int(i)][0]) for i in idxs]
        if getattr(self.ds, 'fnames', None) is None or getattr(self.ds, 'root', None) is None:
            raise ValueError("ds needs fnames and root to show the original images")
        return [_open_rgb(Path(self.ds.root) / self.ds.fnames[int(i)]) for i in idxs]

    def _label(self, i: int | np.integer) -> str:
        p = self.preds[i]
        return f'{self.classes[p]} {self.probs[i, p]:.2f}\n(true: {self.classes[self.y[i]]})'

    def plot_val_with_title(self, idxs: Sequence[int] | np.ndarray, title: str, *,
                            transformed: bool = False,
                            figsize: tuple[float, float] | None = None) -> Figure:
        """The images at `idxs` in one row, each titled with its predicted class, that class's
        probability and the true class: `res.plot_val_with_title(res.random_incorrect(), 'Wrong')`.
        Shows the original files, or with `transformed=True` the denormalised model inputs."""
        idxs = np.asarray(idxs, dtype=np.int64).reshape(-1)
        if len(idxs) == 0:
            fig = figure(figsize=figsize or (4, 1.5))
            fig.text(0.5, 0.4, 'Not found.', ha='center', va='center')
            fig.suptitle(title, fontsize=16)
            return fig
        return plots(self._images(idxs, transformed), figsize or (3 * len(idxs), 4), 1,
                     [self._label(i) for i in idxs], title)

    def _plot_picked(self, what: str, idxs: np.ndarray, y_cls: int | str, **kw: Any) -> Figure:
        return self.plot_val_with_title(idxs, f'{what} {self.classes[self._cls(y_cls)]}', **kw)

    def plot_most_correct(self, y_cls: int | str, n: int = 4, **kw: Any) -> Figure:
        """`res.plot_most_correct(0)`: see `most_correct`; keywords as `plot_val_with_title`."""
        return self._plot_picked('Most correct', self.most_correct(y_cls, n), y_cls, **kw)

    def plot_most_incorrect(self, y_cls: int | str, n: int = 4, **kw: Any) -> Figure:
        """`res.plot_most_incorrect(0)`: see `most_incorrect`."""
        return self._plot_picked('Most incorrect', self.most_incorrect(y_cls, n), y_cls, **kw)

    def plot_most_uncertain(self, y_cls: int | str, n: int = 4, **kw: Any) -> Figure:
        """`res.plot_most_uncertain(0)`: see `most_uncertain`."""
        return self._plot_picked('Most uncertain', self.most_uncertain(y_cls, n), y_cls, **kw)

    # --- summaries ----------------------------------------------------------------------------
    def confusion_matrix(self) -> np.ndarray:
        """scikit-learn's (C, C) count matrix: rows true class, columns predicted."""
        from sklearn.metrics import confusion_matrix
        return confusion_matrix(self.y, self.preds, labels=np.arange(len(self.classes)))

    def plot_confusion_matrix(self, **kw: Any) -> Figure:
        """`res.plot_confusion_matrix(normalize=True)`; keywords as `plot_confusion_matrix`."""
        return plot_confusion_matrix(self.confusion_matrix(), self.classes, **kw)

    def most_confused(self, min_val: int = 1) -> list[tuple[Any, Any, int]]:
        """(actual, predicted, count) for each off-diagonal cell with at least `min_val` images,
        the largest count first (ties in class order)."""
        cm = self.confusion_matrix()
        mask = (cm >= min_val) & ~np.eye(len(cm), dtype=bool)
        pairs = [(self.classes[i], self.classes[j], int(cm[i, j])) for i, j in zip(*np.nonzero(mask))]
        return sorted(pairs, key=lambda t: -t[2])

    def top_losses(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(losses, idxs) for the `k` images (all when None) with the largest negative log
        likelihood of their true class, largest first."""
        if k is not None and k < 0:
            raise ValueError(f"k must be 0 or more; got {k}")
        losses = -self._logp[np.arange(len(self.y)), self.y]
        idxs = np.argsort(-losses, kind='stable')[:k]
        return losses[idxs], idxs

    def plot_top_losses(self, k: int = 9, figsize: tuple[float, float] | None = None, *,
                        transformed: bool = False) -> Figure:
        """The `k` worst images in a grid (3x3 for nine), each titled predicted/actual / loss /
        probability of the prediction, as fastai 2 does: `res.plot_top_losses(9)`."""
        losses, idxs = self.top_losses(k)
        if len(idxs) == 0:
            return self.plot_val_with_title(idxs, 'Prediction/Actual/Loss/Probability', figsize=figsize)
        rows = math.ceil(len(idxs) / 3)
        titles = [f'{self.classes[self.preds[i]]}/{self.classes[self.y[i]]} / {loss:.2f} / '
                  f'{self.probs[i, self.preds[i]]:.2f}' for loss, i in zip(losses, idxs)]
        return plots(self._images(idxs, transformed), figsize or (12, 4 * rows), rows, titles,
                     'Prediction/Actual/Loss/Probability')

    def classification_report(self) -> str:
        """scikit-learn's per-class precision, recall and F1 as text:
        `print(res.classification_report())`."""
        from sklearn.metrics import classification_report
        return classification_report(self.y, self.preds, labels=np.arange(len(self.classes)),
                                     target_names=[str(c) for c in self.classes], zero_division=0)
