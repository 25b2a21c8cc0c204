"""The package's shape: course-facing star imports, an `__all__` everywhere, imports one way."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'fastlearn'

# Lower layers never import higher ones (docs/architecture.md draws the same picture).
LAYERS = {
    'core': 0, 'csv_labels': 0,
    'weights': 1,
    'images': 2, 'summary': 2, 'progress': 2, 'layers': 2, 'archs': 2, 'layer_optimizer': 2,
    'metrics': 2, 'seg_metrics': 2, 'multilabel': 2, 'schedules': 2, 'augmentations': 2,
    'plots': 2, 'targets': 2, 'show': 2, 'distributed': 2, 'precision': 2, 'loader': 2,
    'sources': 3, 'resize': 3, 'stats': 3, 'torch_imports': 3, 'image_datasets': 3, 'model': 3, 'sgdr': 3, 'unet': 3,
    'transforms': 4,
    'dataset': 5, 'precompute': 5, 'saving': 5, 'regression': 5, 'export': 5, 'target_data': 5,
    'guards': 5, 'one_cycle': 5, 'callbacks': 5,
    'tasks': 6, 'data_block': 6, 'batch_norm': 6,
    'predicting': 7, 'fine_tuning': 7,
    'learner': 8,
    'seg_learner': 9,
    'conv_learner': 10,
    'demo': 11, 'mistakes': 11,
    'cli': 12,
    '__main__': 13,
}
MODULES = sorted(p.stem for p in PKG.glob('*.py') if p.stem not in ('__init__', 'imports'))


def package_imports(module: str) -> set[str]:
    """The fastlearn modules that `module` imports (relative or absolute), at any depth of code."""
    tree = ast.parse((PKG / f'{module}.py').read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split('.')[0])
            elif node.level == 1:
                found.update(a.name for a in node.names if (PKG / f'{a.name}.py').exists())
            elif node.module and node.module.startswith('fastlearn.'):
                found.add(node.module.split('.')[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith('fastlearn.'))
    return found


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYERS), f'add {set(MODULES) - set(LAYERS)} to LAYERS'


@pytest.mark.parametrize('module', MODULES)
def test_imports_point_down(module):
    for dep in package_imports(module):
        assert LAYERS[dep] < LAYERS[module], f'{module} (layer {LAYERS[module]}) imports {dep} (layer {LAYERS[dep]})'


@pytest.mark.parametrize('module', MODULES + ['imports'])
def test_all_is_declared_and_true(module):
    mod = importlib.import_module(f'fastlearn.{module}')
    assert hasattr(mod, '__all__'), f'fastlearn.{module} has no __all__'
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f'fastlearn.{module}.__all__ names missing attributes: {missing}'


@pytest.mark.parametrize('module', MODULES)
def test_no_star_imports_inside_the_package(module):
    tree = ast.parse((PKG / f'{module}.py').read_text())
    stars = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             and any(a.name == '*' for a in n.names)]
    assert not stars, f'fastlearn.{module} star-imports {stars}'


def test_course_header_gives_the_course_names():
    ns: dict = {}
    exec('from fastlearn.imports import *\n'
         'from fastlearn.transforms import *\n'
         'from fastlearn.conv_learner import *\n'
         'from fastlearn.model import *\n'
         'from fastlearn.dataset import *\n'
         'from fastlearn.sgdr import *\n'
         'from fastlearn.plots import *\n', ns)
    for name in ['np', 'plt', 'os', 'Path', 'torch', 'nn', 'F', 'ConvLearner', 'ImageClassifierData',
                 'tfms_from_model', 'transforms_side_on', 'transforms_top_down', 'CropType', 'resnet34',
                 'efficientnet_lite0', 'accuracy', 'plots', 'plots_from_files', 'plot_confusion_matrix',
                 'ImageModelResults', 'get_cv_idxs', 'fit', 'Callback']:
        assert name in ns, name
    # nothing private or incidental leaks through the stars
    assert not [n for n in ns if n.startswith('_') and n != '__builtins__']
    assert 'warnings' not in ns and 'OrderedDict' not in ns


def test_conv_learner_star_is_the_mission_snippet():
    """The brief's recipe needs nothing but `from fastlearn.conv_learner import *`."""
    ns: dict = {}
    exec('from fastlearn.conv_learner import *', ns)
    names = set(ns) - {'__builtins__'}
    assert {'np', 'ConvLearner', 'ImageClassifierData', 'tfms_from_model', 'transforms_side_on',
            'resnet34', 'accuracy', 'set_seed', 'plot_confusion_matrix', 'ImageModelResults'} <= names
    assert names == set(importlib.import_module('fastlearn.conv_learner').__all__)


def test_import_stays_light():
    """matplotlib, sklearn and timm load only when a plot, a metric or a timm model needs them."""
    code = ('import sys, fastlearn.conv_learner; '
            'print(sorted(m for m in ("matplotlib", "sklearn", "timm") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'
