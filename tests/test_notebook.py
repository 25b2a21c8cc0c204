"""examples/lesson1.ipynb runs from top to bottom, small: a subset of the photos (or of the
digits when the photos are absent), 64 px, one cycle per fit, in a temporary folder."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import DOGSCATS

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

NOTEBOOK = Path(__file__).resolve().parents[1] / 'examples' / 'lesson1.ipynb'
TIMEOUT = 120  # seconds per cell: a hung kernel fails the test instead of stalling the suite


def test_notebook_is_stored_clean():
    """Committed without outputs or execution counts, as nbformat 4."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    for cell in nb.cells:
        if cell.cell_type == 'code':
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def _kernel_manager(tmp_path: Path):
    """A kernel that runs this interpreter (the venv's python), whatever kernelspecs the user's
    Jupyter folders hold: a kernelspec of our own in a temporary folder."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    spec_dir = tmp_path / 'kernels' / 'fastlearn-test'
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'fastlearn test', 'language': 'python'}))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / 'kernels')])
    return AsyncKernelManager(kernel_name='fastlearn-test', kernel_spec_manager=ksm)


def _text(cell) -> str:
    out = []
    for o in cell.outputs:
        if o.output_type == 'stream':
            out.append(o.text)
        elif o.output_type in ('execute_result', 'display_data'):
            out.append(o.get('data', {}).get('text/plain', ''))
    return ''.join(out)


PLOT_CALL = re.compile(r'\bplot\w*\(')  # plots_from_files(, sched.plot(, plot_lr(, ...


WIDGET = 'application/vnd.jupyter.widget-view+json'


def _hide_ipywidgets(tmp_path: Path, monkeypatch) -> None:
    """The kernel finds an `ipywidgets` that fails to import, as where it is not installed."""
    hide = tmp_path / 'hide'
    (hide / 'ipywidgets').mkdir(parents=True)
    (hide / 'ipywidgets' / '__init__.py').write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(hide), os.environ.get('PYTHONPATH')])))


def _check_progress(code: list, widgets: bool) -> None:
    """Training shows a bar (a widget, or text naming 'epoch 1/1' without ipywidgets) and the
    epoch table as HTML; TTA shows its passes."""
    train = [c for c in code if 'learn.precompute = False' in c.source and 'learn.fit(' in c.source]
    tta = [c for c in code if 'learn.TTA()' in c.source]
    assert len(train) == 1 and len(tta) == 1
    for cell, name in ((train[0], 'epoch 1/1'), (tta[0], 'TTA 1/5')):
        bars = [o for o in cell.outputs if WIDGET in o.get('data', {})]
        stderr = ''.join(o.text for o in cell.outputs if o.output_type == 'stream' and o.name == 'stderr')
        if widgets:
            assert bars, f'no widget bar in {cell.source[:40]!r}'
        else:
            assert not bars and name in stderr and '%|' in stderr, stderr
    tables = [o['data']['text/html'] for o in train[0].outputs if 'text/html' in o.get('data', {})]
    assert len(tables) == 1 and tables[0].startswith('<table') and '<th>accuracy</th>' in tables[0]


@pytest.mark.parametrize('data, widgets', [('photos', True), ('digits', True), ('digits', False)])
def test_lesson1_runs(data, widgets, tmp_path, monkeypatch):
    if data == 'photos' and not (DOGSCATS / 'train').is_dir():
        pytest.skip(f'{DOGSCATS} is not present')
    if widgets:
        pytest.importorskip('ipywidgets')
    else:
        _hide_ipywidgets(tmp_path, monkeypatch)
    settings = {'FASTLEARN_LESSON_PATH': str(DOGSCATS) if data == 'photos' else 'digits',
                'FASTLEARN_LESSON_SUBSET': '40' if data == 'photos' else '16',
                'FASTLEARN_LESSON_SZ': '64', 'FASTLEARN_LESSON_BS': '16',
                'FASTLEARN_LESSON_EPOCHS': '1', 'FASTLEARN_LESSON_WORK': str(tmp_path / 'work'),
                # One thread: on a busy machine two threads wait on each other at every small
                # op (lr_find on the head ran 20x slower); the loader workers use the other core.
                'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv('MPLBACKEND', raising=False)  # let the kernel use its inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=TIMEOUT,
                                     resources={'metadata': {'path': str(run_dir)}})
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError naming the cell on the first error
    finally:
        print(f'lesson1.ipynb on the {data}: {time.perf_counter() - start:.1f} s')
    code = [c for c in nb.cells if c.cell_type == 'code']
    errors = [o for c in code for o in c.outputs if o.output_type == 'error']
    assert not errors, errors
    # and nothing failed quietly on the way (an exception printed by a destructor, say)
    noise = [o.text for c in code for o in c.outputs if o.output_type == 'stream'
             and ('Traceback' in o.text or 'Exception ignored' in o.text)]
    assert not noise, noise
    # every plot reaches the notebook (drawn by the inline backend or as the cell's value)
    blank = [c.source for c in code if PLOT_CALL.search(c.source)
             and not any('image/png' in o.get('data', {}) for o in c.outputs)]
    assert not blank, f'cells that plot but show no figure: {blank}'
    _check_progress(code, widgets)
    acc_cells = [c for c in code if 'accuracy' in c.metadata.get('tags', [])]
    assert len(acc_cells) == 1
    m = re.search(r'accuracy with TTA: ([0-9.]+)', _text(acc_cells[0]))
    assert m, _text(acc_cells[0])
    assert 0.0 <= float(m.group(1)) <= 1.0
    # models and the cache went to WORK: nothing beside the notebook's working folder
    assert (tmp_path / 'work' / 'models' / '64_all.pth').is_file()
    assert not any(run_dir.iterdir()), sorted(run_dir.iterdir())
