"""Write docs/api.md, the API reference, from the code itself: each module's `__all__`, each
name's signature and the first paragraph of its docstring. Run it after changing a public name:

    .venv/bin/python docs/make_api.py           # rewrite docs/api.md
    .venv/bin/python docs/make_api.py --check   # exit 1 if docs/api.md is out of date
"""
from __future__ import annotations

import argparse
import difflib
import enum
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import fastlearn

OUT = Path(__file__).resolve().parent / 'api.md'
# The order of docs/architecture.md: each module only uses the ones above it.
ORDER = ['core', 'imports', 'torch_imports', 'transforms', 'targets', 'images', 'progress', 'layers',
         'archs', 'layer_optimizer', 'metrics', 'plots', 'show', 'summary', 'dataset', 'target_data',
         'data_block', 'model', 'sgdr', 'one_cycle', 'guards', 'precompute', 'callbacks', 'learner',
         'conv_learner', 'export', 'demo', 'cli']


class _Ann:
    """An annotation shown as written (the modules use `from __future__ import annotations`, so
    annotations are strings, which `inspect` would otherwise print with quotes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _default(value):
    if isinstance(value, enum.Enum):  # CropType.RANDOM, not <CropType.RANDOM: 1>
        return _Ann(f'{type(value).__name__}.{value.name}')
    return value


def _signature(obj, *, method: bool = False) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return '(...)'
    ann = lambda a: _Ann(a) if isinstance(a, str) else a  # noqa: E731
    params = [p.replace(annotation=ann(p.annotation), default=_default(p.default))
              for p in sig.parameters.values()]
    if method and params and params[0].name in ('self', 'cls'):
        params = params[1:]
    return str(sig.replace(parameters=params, return_annotation=ann(sig.return_annotation)))


def _summary(obj) -> str:
    """The docstring's first paragraph; when it ends with a colon, the example after it too."""
    doc = inspect.getdoc(obj) or ''
    paras = doc.split('\n\n')
    first = ' '.join(line.strip() for line in paras[0].splitlines()).strip()
    if first.endswith(':') and len(paras) > 1:
        return f'{first}\n\n' + '\n'.join('    ' + line.strip() for line in paras[1].splitlines())
    return first


def _members(cls) -> list[tuple[str, object]]:
    """Public methods and properties written in the class body, with a docstring of their own
    (an undocumented override of a library hook is not part of the API), in source order."""
    out = []
    for name, member in vars(cls).items():
        if name.startswith('_'):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        func = member.fget if isinstance(member, property) else getattr(member, 'func', member)
        if not getattr(func, '__doc__', None):
            continue
        if inspect.isfunction(member) or isinstance(member, property) or hasattr(member, 'attrname'):
            out.append((name, member))
    return out


def _value(obj) -> str:
    """A value's repr that is the same on every run (sets sorted, classes by name)."""
    if isinstance(obj, (set, frozenset)):
        return '{' + ', '.join(sorted(map(repr, obj))) + '}'
    if inspect.isclass(obj):
        return obj.__name__
    if isinstance(obj, tuple) and obj and all(inspect.isclass(o) for o in obj):
        return '(' + ', '.join(o.__name__ for o in obj) + ')'
    return repr(obj)


def _entry(name: str, obj, module) -> list[str]:
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        members = ', '.join(f'`{name}.{k}`' for k in obj.__members__)
        return [f'### enum `{name}`', '', _summary(obj), '', f'Members: {members}.', '']
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        lines = [f'### class `{name}`' + (f'({", ".join(bases)})' if bases else ''), '',
                 f'`{name}{_signature(obj)}`', '', _summary(obj), '']
        for mname, member in _members(obj):
            if isinstance(member, property) or hasattr(member, 'attrname'):
                lines.append(f'- `.{mname}` (property): {_summary(member.fget if isinstance(member, property) else member.func)}')
            else:
                lines.append(f'- `.{mname}{_signature(member, method=True)}`: {_summary(member)}'.replace('\n', '\n  '))
        return lines + ['']
    if callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return [f'### `{name}{_signature(obj)}`', '', _summary(obj), '']
    if inspect.ismodule(obj):
        return [f'- `{name}`: the module `{obj.__name__}`']
    text = _value(obj)
    text = text if len(text) <= 100 else text[:97] + '...'
    kind = type(obj).__name__
    return [f'- `{name}` ({kind}): `{text}`']


def _module_section(modname: str) -> list[str]:
    module = importlib.import_module(f'fastlearn.{modname}')
    names = list(getattr(module, '__all__', []))
    lines = [f'## fastlearn.{modname}', '', _summary(module), '']
    if modname == 'imports':  # the notebook hub: names from the standard library and friends
        return lines + ['Gives: ' + ', '.join(f'`{n}`' for n in names) + '.', '']
    plain, rest, elsewhere, foreign = [], [], [], []
    for n in names:
        obj = getattr(module, n)
        home = getattr(obj, '__module__', None) or ''
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and home != module.__name__ \
                and home.startswith('fastlearn'):
            elsewhere.append(f'[`{n}`](#{home.replace(".", "")})')
        elif (inspect.isclass(obj) or callable(obj) and not isinstance(obj, type(fastlearn))) \
                and not home.startswith('fastlearn') and not hasattr(obj, 'builder'):
            foreign.append(f'`{n}` ({home.split(".")[0] or type(obj).__name__})')
        else:
            (rest if inspect.isclass(obj) or inspect.isfunction(obj) else plain).append((n, obj))
    for n, obj in rest:
        lines += _entry(n, obj, module)
    if elsewhere:
        lines += ['Also here, documented with their own module: ' + ', '.join(elsewhere) + '.', '']
    if foreign:
        lines += ['Also here, from other libraries (as the course had them): '
                  + ', '.join(foreign) + '.', '']
    if plain:
        lines += ['Values:', ''] + [line for n, obj in plain for line in _entry(n, obj, module)] + ['']
    return lines


def render() -> str:
    found = [m.name for m in pkgutil.iter_modules(fastlearn.__path__) if not m.name.startswith('_')]
    mods = [m for m in ORDER if m in found] + sorted(set(found) - set(ORDER))
    lines = ['# API reference', '',
             '<!-- Generated by docs/make_api.py from the code: edit the docstrings, then rerun it. -->', '',
             "Every public name, module by module, in the order of the package's imports "
             "([architecture.md](architecture.md)). The course's notebooks need only "
             '`from fastlearn.conv_learner import *` (see [`fastlearn.conv_learner`](#fastlearnconv_learner)).',
             '', 'Modules: ' + ', '.join(f'[`{m}`](#fastlearn{m.replace("_", "_")})' for m in mods), '']
    for m in mods:
        lines += _module_section(m)
    return '\n'.join(line.rstrip() for line in lines).rstrip() + '\n'


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--check', action='store_true', help='exit 1 if docs/api.md is out of date')
    args = p.parse_args()
    text = render()
    if args.check:
        old = OUT.read_text() if OUT.exists() else ''
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                       'docs/api.md', 'generated', n=1))
            print('docs/api.md is out of date: run .venv/bin/python docs/make_api.py', file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f'wrote {OUT} ({len(text.splitlines())} lines)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
