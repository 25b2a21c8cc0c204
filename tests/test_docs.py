"""The docs stay true: the site builds with every link and reference resolved, the API page
covers every module, and the figures exist."""
from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastlearn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'


def test_the_api_page_renders_every_module():
    listed = re.findall(r'^::: fastlearn\.(\w+)$', (DOCS / 'api.md').read_text(), re.M)
    modules = sorted(m.name for m in pkgutil.iter_modules(fastlearn.__path__) if not m.name.startswith('_'))
    assert sorted(listed) == modules, 'add the new module to docs/api.md, in import order'
    assert len(listed) == len(set(listed))


def test_the_site_builds_strictly(tmp_path):
    """`make docs`: mkdocs with strict=true fails on a broken link, anchor or API reference
    (not with -q, which hides the warnings that strict counts)."""
    mkdocs = Path(sys.executable).with_name('mkdocs')
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install 'fastlearn[docs]')")
    env = {**os.environ, 'NO_MKDOCS_2_WARNING': '1'}
    out = subprocess.run([str(mkdocs), 'build', '--strict', '-d', str(tmp_path / 'site')],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, f'the docs site does not build:\n{out.stdout}{out.stderr}'
    api = (tmp_path / 'site' / 'api' / 'index.html').read_text()
    for name in ('fastlearn.conv_learner.ConvLearner', 'fastlearn.learner.Learner.fit',
                 'fastlearn.sgdr.CosAnneal'):
        assert f'id="{name}"' in api, f'{name} is missing from the rendered API page'
    shutil.rmtree(tmp_path / 'site')


def test_every_linked_figure_exists():
    for page in DOCS.glob('*.md'):
        for target in re.findall(r'!\[[^\]]*\]\(([^)]+)\)', page.read_text()):
            assert (page.parent / target).is_file(), f'{page.name} links a missing figure {target}'
