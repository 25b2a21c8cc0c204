"""`data.show_batch(rows=3)`: a grid of items as the model sees them, with their targets: the
class or tags under the image, numbers, points drawn on it, boxes, or the mask overlaid with a
legend of the codes (Void left clear).

    data.show_batch(rows=3)          # the training set, augmented
    data.show_batch(rows=2, ds_type='valid')

Returns the pyplot figure (see `plots`: drawn once in Jupyter, savefig works headless).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .core import subplots, to_np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ['show_batch', 'show_seg_results']


def show_batch(data: Any, rows: int = 3, *, ds_type: str = 'train',
               figsize: tuple[float, float] | None = None) -> Figure:
    """`show_batch(data, rows=3)`: the first rows x rows items of the training (or `'valid'`,
    `'test'`) dataset, through its transforms."""
    ds = {'train': data.trn_ds, 'valid': data.val_ds, 'test': data.test_ds}.get(ds_type, False)
    if ds is False:
        raise ValueError(f"ds_type must be 'train', 'valid' or 'test'; got {ds_type!r}")
    if ds is None or len(ds) == 0:
        raise ValueError(f"show_batch: the {ds_type} set is empty; pass another ds_type")
    if int(rows) < 1:
        raise ValueError(f"rows must be at least 1; got {rows}")
    n = min(int(rows) ** 2, len(ds))
    cols = min(int(rows), n)
    nrows = -(-n // cols)
    fig, axes = subplots(nrows, cols, figsize=figsize or (3.2 * cols, 3.2 * nrows), squeeze=False)
    classes, void = data.classes, getattr(ds, 'void', None)
    shown: set[int] = set()
    for i, ax in enumerate(axes.flat):
        ax.axis('off')
        if i >= n:
            continue
        x, y = ds[i]
        ax.imshow(ds.denorm(x), interpolation='none')
        title = _draw_target(ax, to_np(y), ds, classes, void, shown)
        if title:
            ax.set_title(title, fontsize=10)
    if shown and classes is not None:
        _legend(fig, classes, sorted(shown))
    return fig


def _draw_target(ax: Any, y: np.ndarray, ds: Any, classes: Any, void: int | None,
                 shown: set[int]) -> str:
    """Draws points, boxes or a mask on `ax`; returns the title (class, tags, numbers)."""
    tfm_y = getattr(getattr(ds.transform, 'tfm_y', None), 'name', 'NO')
    if y.ndim == 2 and tfm_y == 'CLASS':
        rgba = _colours()[y % 20]
        rgba[..., 3] = np.where(y == void, 0.0, 0.5)  # Void stays clear
        ax.imshow(rgba, interpolation='none')
        shown.update(int(v) for v in np.unique(y) if v != void)
        return ''
    if tfm_y == 'COORD' and y.ndim == 2 and y.shape[-1] == 2:
        # imshow puts pixel (r, c)'s centre at (c, r); our points have it at (r + .5, c + .5)
        ax.scatter(y[:, 1] - 0.5, y[:, 0] - 0.5, s=60, c='red', marker='+', linewidths=2)
        return ''
    if tfm_y == 'COORD':
        from matplotlib.patches import Rectangle
        for t, left, b, r in y.reshape(-1, 4):
            ax.add_patch(Rectangle((left - 0.5, t - 0.5), r - left, b - t, fill=False, ec='red', lw=2))
        return ''
    if ds.is_reg:
        return ' '.join(f'{v:.3g}' for v in np.ravel(y))
    if ds.is_multi:
        return ';'.join(str(classes[j]) for j in np.flatnonzero(y)) if classes else str(y)
    return str(classes[int(y)]) if classes else str(int(y))


def show_seg_results(photos: Any, truths: Any, preds: Any, classes: Any, void: int | None = None,
                     *, figsize: tuple[float, float] | None = None) -> Figure:
    """One row per image: the photo | its true mask | the predicted mask, in the colours of
    `show_batch` (Void black), with a legend of the codes that appear.

        show_seg_results(photos, masks, preds.argmax(1), data.classes, data.void)
    """
    photos, truths, preds = list(photos), to_np(truths), to_np(preds)
    if not (len(photos) == len(truths) == len(preds)) or not len(photos):
        raise ValueError(f"show_seg_results: {len(photos)} photos, {len(truths)} masks and "
                         f"{len(preds)} predictions; pass one of each per image (at least one)")
    n = len(photos)
    fig, axes = subplots(n, 3, figsize=figsize or (9.6, 2.6 * n), squeeze=False)
    colours, shown = _colours(), set[int]()
    for row, photo, truth, pred in zip(axes, photos, truths, preds):
        row[0].imshow(photo, interpolation='none')
        for ax, m in ((row[1], truth), (row[2], pred)):
            rgb = colours[m % 20][..., :3]
            if void is not None:
                rgb[m == void] = 0.0
            ax.imshow(rgb, interpolation='none')
            shown.update(int(v) for v in np.unique(m) if v != void)
        for ax in row:
            ax.axis('off')
    for ax, title in zip(axes[0], ('photo', 'truth', 'prediction')):
        ax.set_title(title, fontsize=10)
    if classes is not None:
        _legend(fig, classes, sorted(shown))
    return fig


def _colours() -> np.ndarray:
    """20 distinct RGBA colours, one per class index (modulo 20)."""
    import matplotlib
    from matplotlib.colors import ListedColormap
    cmap = matplotlib.colormaps['tab20']
    assert isinstance(cmap, ListedColormap)  # tab20 is a list of 20 colours
    return np.array([(*c, 1.0) for c in np.asarray(cmap.colors)])


def _legend(fig: Any, classes: Any, shown: list[int]) -> None:
    from matplotlib.patches import Patch
    colours = _colours()
    handles = [Patch(color=colours[k % 20], alpha=0.5, label=str(classes[k]))
               for k in shown if k < len(classes)]
    fig.legend(handles=handles, loc='lower center', ncol=min(6, len(handles)), fontsize=9)
