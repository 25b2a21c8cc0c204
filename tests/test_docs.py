"""The docs stay true: the API reference is regenerated from the code, and the figures exist."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / 'docs'


def test_api_reference_matches_the_code():
    out = subprocess.run([sys.executable, str(DOCS / 'make_api.py'), '--check'],
                         capture_output=True, text=True)
    assert out.returncode == 0, f'docs/api.md is stale: run `python docs/make_api.py`\n{out.stdout}{out.stderr}'


def test_every_linked_figure_exists():
    for page in DOCS.glob('*.md'):
        for target in re.findall(r'!\[[^\]]*\]\(([^)]+)\)', page.read_text()):
            assert (page.parent / target).is_file(), f'{page.name} links a missing figure {target}'
