"""core: per-group broadcasting, cycle lengths, atomic writes, figures drawn once in Jupyter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastlearn import core
from fastlearn.core import atomic_write, cycle_lengths, listify, subplots, sum_geom, to_np


def test_listify_broadcasts_a_scalar_and_a_single_value():
    assert listify(0.1, 3) == [0.1, 0.1, 0.1]
    assert listify([0.1], 3) == [0.1, 0.1, 0.1]
    assert listify(np.array([1e-4, 1e-3, 1e-2]), 3) == [1e-4, 1e-3, 1e-2]
    assert listify(torch.tensor([1.0, 2.0]), 2) == [1.0, 2.0]


def test_listify_names_both_counts_and_the_fix():
    with pytest.raises(ValueError, match=r'wds has 2 values but the model has 3 layer groups; '
                                         r'pass one per group, e\.g\. np\.array'):
        listify([1, 2], 3, 'wds', 'np.array([1e-6, 1e-5, 1e-4])')


def test_cycle_lengths_and_their_sum():
    assert cycle_lengths(3, 1, 2) == [1, 2, 4]
    assert cycle_lengths(3, 1, 1) == [1, 1, 1]
    assert sum_geom(1, 2, 3) == 7            # fit(lr, 3, cycle_len=1, cycle_mult=2)
    assert sum_geom(2, 1, 3) == 6            # cycle_mult=1 has its own branch
    assert sum_geom(1, 2, 3) == sum(cycle_lengths(3, 1, 2))


def test_to_np_handles_grad_and_half_tensors():
    x = torch.ones(2, requires_grad=True) * 2
    assert to_np(x).tolist() == [2.0, 2.0]
    assert to_np(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32


def test_atomic_write_replaces_whole_files_only(tmp_path):
    f = tmp_path / 'model.pth'
    with atomic_write(f) as fh:
        fh.write(b'first')
    with pytest.raises(RuntimeError):
        with atomic_write(f) as fh:
            fh.write(b'half of the seco')
            raise RuntimeError('interrupted')
    assert f.read_bytes() == b'first'
    assert [p.name for p in tmp_path.iterdir()] == ['model.pth']  # no temporary file left


@pytest.fixture
def displayed(monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, 'display', lambda obj: shown.append(obj))
    return shown


def test_figures_display_when_no_inline_backend_will(displayed):
    import matplotlib.pyplot as plt
    fig, _ = subplots()
    fig._ipython_display_()
    assert len(displayed) == 1
    plt.close(fig)


def test_figures_are_drawn_once_under_the_inline_backend(displayed, monkeypatch):
    import matplotlib.pyplot as plt
    fig, _ = subplots()
    monkeypatch.setattr(plt, 'get_backend', lambda: 'module://matplotlib_inline.backend_inline')
    fig._ipython_display_()                 # a plot on a cell's last line
    assert len(displayed) == 1
    assert not plt.fignum_exists(fig.number)  # so the backend's end-of-cell pass skips it
    fig._ipython_display_()                 # shown again later: still works
    assert len(displayed) == 2


def test_default_workers_suit_the_platform(monkeypatch):
    monkeypatch.setattr(core.sys, 'platform', 'darwin')
    assert core.default_num_workers() == 0
    monkeypatch.setattr(core.sys, 'platform', 'linux')
    assert 1 <= core.default_num_workers() <= 8
