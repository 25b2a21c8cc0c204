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


# ---- faults: permissions, writers killed mid-write, a full disk ---------------------------------

@pytest.mark.parametrize('umask, want', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_the_permissions_open_would(tmp_path, umask, want):
    import os
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / 'model.pth') as fh:
            fh.write(b'x')
        with open(tmp_path / 'plain.txt', 'wb') as fh:  # what the user would get from open()
            fh.write(b'x')
    finally:
        os.umask(old)
    assert (tmp_path / 'model.pth').stat().st_mode & 0o777 == want
    assert (tmp_path / 'plain.txt').stat().st_mode & 0o777 == want


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    f = tmp_path / 'report.md'
    f.write_bytes(b'old')
    f.chmod(0o640)
    with atomic_write(f, 'w') as fh:
        fh.write('new')
    assert f.read_text() == 'new' and f.stat().st_mode & 0o777 == 0o640


def _writer_killed_mid_write(target) -> int:
    """Fork a child that starts an atomic write of `target` and stops half-way; `kill -9` it.
    Returns the dead child's pid."""
    import os
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write half a file, say so, and wait to be killed
        try:
            os.close(r)
            with atomic_write(target) as fh:
                fh.write(b'half a model' * 1000)
                fh.flush()
                os.write(w, b'1')
                while True:
                    signal.pause()
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b'1'
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return pid


def test_a_killed_writer_leaves_a_part_file_that_the_next_write_removes(tmp_path):
    f = tmp_path / 'model.pth'
    f.write_bytes(b'previous')
    pid = _writer_killed_mid_write(f)
    parts = list(tmp_path.glob('.model.pth.*.part'))
    assert len(parts) == 1 and f'-{pid}.' in parts[0].name
    assert f.read_bytes() == b'previous'                 # the previous file is intact
    with atomic_write(f) as fh:
        fh.write(b'next')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pth']  # leftover cleaned up
    assert f.read_bytes() == b'next'


def test_a_live_writers_part_file_is_never_removed(tmp_path):
    import os
    f = tmp_path / 'model.pth'
    live = tmp_path / f'.model.pth.{core._HOST_TAG}-{os.getppid()}.abc123.part'   # a live pid
    other_host = tmp_path / '.model.pth.00000000-999999999.abc123.part'           # another machine
    unknown = tmp_path / '.model.pth.abc123.part'                                 # no pid: unknowable
    dead_other = tmp_path / f'.other.pth.{core._HOST_TAG}-999999999.abc123.part'  # dead pid
    for p in (live, other_host, unknown, dead_other):
        p.write_bytes(b'partial')
    with atomic_write(f) as fh:
        fh.write(b'new')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['model.pth', live.name, other_host.name, unknown.name])   # a dead writer's file of
    #                                                                 another name goes too


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno
    import io
    import os
    f = tmp_path / 'model.pth'
    f.write_bytes(b'previous')
    real_fdopen = os.fdopen

    class FillsUp(io.RawIOBase):  # a disk with 1000 bytes free
        def __init__(self, fd):
            self.raw, self.n = real_fdopen(fd, 'wb', buffering=0), 0

        def writable(self):
            return True

        def write(self, b):
            self.n += len(b)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, 'No space left on device')
            return self.raw.write(b)

        def fileno(self):
            return self.raw.fileno()

        def close(self):
            self.raw.close()
            super().close()

    monkeypatch.setattr(os, 'fdopen', lambda fd, mode='r', *a, **k: io.BufferedWriter(FillsUp(fd)))
    with pytest.raises(OSError, match=r'no space left on device while writing .*model\.pth.*'
                                      r'previous file, if any, is unchanged') as info:
        with atomic_write(f) as fh:
            torch.save({'w': torch.zeros(10_000)}, fh)   # torch reports it as a RuntimeError
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert f.read_bytes() == b'previous'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pth']


def test_the_demo_digits_folder_is_not_private(tmp_path, monkeypatch):
    import os
    import types

    import sklearn.datasets
    from fastlearn.demo import write_digits
    rng = np.random.default_rng(0)
    ten = types.SimpleNamespace(images=rng.integers(0, 17, (10, 8, 8)).astype(float),
                                target=np.arange(10))   # ten digits stand in for 1,797
    monkeypatch.setattr(sklearn.datasets, 'load_digits', lambda: ten)
    old = os.umask(0o022)
    try:
        dest = write_digits(tmp_path / 'digits', px=8)
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o755               # mkdtemp alone gives 0700
    assert (dest / 'train').stat().st_mode & 0o777 == 0o755
    assert next((dest / 'train' / '0').iterdir()).stat().st_mode & 0o777 == 0o644
