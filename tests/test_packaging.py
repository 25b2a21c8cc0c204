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
