"""Every ```python block in docs/*.md and README.md runs as written, in order, page by page.

The pages show the real photos (`../shared/data/dogscats`) and real architectures at 128 or
224 px; here the same code runs on generated cats and dogs, the tiny architecture and 32 px,
by the substitutions in `ON_GENERATED_DATA` and nothing else. A block that cannot run here is
skipped only where the page says so, with `<!-- docs-test: skip (reason) -->` above it.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / 'docs').glob('*.md')) + [ROOT / 'README.md']
FENCE = re.compile(r'(<!-- docs-test: skip \([^)]*\) -->\s*)?^```python\n(.*?)^```', re.S | re.M)

# What a page names -> what the test runs instead (real photos, weights, sizes -> generated ones).
ON_GENERATED_DATA = [
    (r"'\.\./shared/data/dogscats'|'data/dogscats/'", 'PHOTOS'),
    (r'\b(efficientnet_lite0|resnet34)\b', 'tiny'),
    (r'\b(128|224)\b', '32'),
    (r"'/tmp/fl/", "WORK + '/"),
]


def blocks(page: Path) -> list[tuple[bool, str]]:
    """(skip, code) per ```python block of `page`, in order."""
    return [(bool(m.group(1)), m.group(2)) for m in FENCE.finditer(page.read_text())]


def test_the_pages_have_code_to_run():
    counts = {p.name: len(blocks(p)) for p in PAGES}
    assert counts['index.md'] >= 1 and counts['recipe.md'] >= 8 and counts['README.md'] >= 1, counts


@pytest.mark.filterwarnings('ignore:precompute=True')
@pytest.mark.parametrize('page', [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_page_code_runs_as_written(page, tiny_arch, tmp_path, monkeypatch):
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    photos = make_image_folder(tmp_path / 'dogscats', classes=('cats', 'dogs'), n_train=12, n_valid=4)
    monkeypatch.chdir(tmp_path)  # anything a page writes relative to the working folder
    ns: dict = {'PHOTOS': str(photos), 'WORK': str(tmp_path / 'work'), 'tiny': tiny_arch}
    ran = 0
    for i, (skip, code) in enumerate(blocks(page)):
        if skip:
            continue
        for pattern, repl in ON_GENERATED_DATA:
            code = re.sub(pattern, repl, code)
        try:
            exec(compile(code, f'{page.name} block {i + 1}', 'exec'), ns)
        except Exception as e:
            raise AssertionError(f'{page.name}, code block {i + 1} fails:\n{code}') from e
        finally:
            plt.close('all')
        ran += 1
    assert ran
