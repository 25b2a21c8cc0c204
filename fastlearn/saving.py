"""Saving and loading a learner's weights, the course's `learn.save(name)` / `learn.load(name)`:
`models/<name>.pth` written atomically, tensors and plain values only, checked against the model
before anything is copied, and with `with_opt=True` the optimizer state too so a run can resume.

    learn.save('224_lastlayer'); learn.load('224_lastlayer')
    learn.save('resume', with_opt=True)     # momentum and each group's lr and wd as well
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core import atomic_write, check_state_dict, is_safetensors, load_tensors
from .distributed import main_only
from .layer_optimizer import _group_params

__all__ = ['save_learner', 'load_learner_weights', 'resolve_path', 'Saving', 'CHECKPOINT']

# The marker of a `save(name, with_opt=True)` file: weights plus optimizer state.
CHECKPOINT = 'fastlearn-checkpoint-1'


def _plain(x: Any) -> Any:
    """Numpy scalars (an lr from `lr_range`) as Python numbers, so the file loads with
    `weights_only=True`."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x.item() if isinstance(x, np.generic) else x


def _write(state: Any, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def save_learner(learn: Any, name: str | os.PathLike, *, with_opt: bool = False) -> Path:
    """What `learn.save(name, with_opt=...)` does; returns the file written."""
    path = learn._model_file(name)
    state = learn.model.state_dict()
    if with_opt:
        state = {'format': CHECKPOINT, 'model': state,
                 'opt': _plain(learn.layer_opt.state_dict()) if learn.layer_opt else None}
    try:
        main_only(_write, state, path)  # one writer however many processes train
    except OSError as e:
        hint = (f" If {path.parent} is read-only, pass models_name='/a/writable/folder' when "
                'creating the learner, or save to an absolute path.'
                if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else '')
        raise OSError(e.errno, f'cannot save {os.fspath(name)!r} to {path}: {e.strerror or e}.'
                      f'{hint}') from e
    return path


def load_learner_weights(learn: Any, name: str | os.PathLike) -> None:
    """What `learn.load(name)` does: the weights, and the optimizer state when the file has it."""
    path = learn._model_file(name)
    if not path.is_file():
        saved = sorted(p.stem for p in learn.models_path.glob('*.pth')) if learn.models_path.is_dir() else []
        raise FileNotFoundError(f'no saved model {os.fspath(name)!r} at {path}; saved models here: '
                                f'{saved or "none"}')
    if is_safetensors(path):  # what learn.export writes
        raise ValueError(f'{path} is a file from learn.export(); open it with '
                         f'load_learner({str(path)!r})')
    state = load_tensors(path, map_location=learn.device, written_by='learn.save(name)')
    if isinstance(state, dict) and 'format' in state and 'state_dict' in state:  # format 1
        raise ValueError(f'{path} is a file from learn.export(); open it with '
                         f'load_learner({str(path)!r})')
    opt = None
    if isinstance(state, dict) and state.get('format') == CHECKPOINT:
        opt, state = state.get('opt'), state.get('model')
    check_state_dict(learn.model, state, path)
    if opt is not None:
        _check_opt_state(learn, opt, path)
    learn.model.load_state_dict(state)
    if opt is not None:
        # A fresh optimizer of this learner's kind, then the saved state: momentum and each
        # group's lr and wd (the placeholder rates are overwritten).
        learn.layer_opt = None
        learn._get_layer_opt(1.0, 0.0).load_state_dict(opt)


def _check_opt_state(learn: Any, opt: Any, path: Path) -> None:
    sizes = [len(_group_params(g)) for g in learn.layer_groups]
    groups = opt.get('param_groups') if isinstance(opt, dict) else None
    saved = [len(g.get('params', [])) for g in groups] if isinstance(groups, list) else None
    if saved != sizes:
        raise ValueError(f'{path} holds optimizer state for layer groups of {saved} parameters, '
                         f'but this learner has {sizes}; it was saved from another model. The '
                         'model is unchanged')


def resolve_path(base: Path, name: str | os.PathLike) -> Path:
    """`name` under `base` (`models` -> `data/dogscats/models`); an absolute name as it is, so
    a learner on a read-only dataset folder can keep its files elsewhere, as in the course."""
    return Path(name) if Path(name).is_absolute() else Path(base) / name


class Saving:
    """`learn.save(name)`, `learn.load(name)`, `learn.load_cycle(name, cycle)`: the Learner's
    files under `learn.models_path` (`models/` beside the data, as in the course)."""
    models_path: Path

    def _model_file(self, name: str | os.PathLike) -> Path:
        """`models/<name>.pth` as in the course; a name ending in `.pth` is taken as a file name
        as it is, and an absolute path points anywhere (`learn.load('/abs/path/m.pth')`)."""
        name = os.fspath(name)
        return resolve_path(self.models_path, name if name.endswith('.pth') else f'{name}.pth')

    def save(self, name: str | os.PathLike, *, with_opt: bool = False) -> Path:
        """Write the weights to `models/<name>.pth`, atomically: an interrupted save leaves the
        previous file loadable.

            learn.save('224_lastlayer')

        `with_opt=True` also stores the optimizer state (momentum, per-group lrs and wds), so
        `load(name)` can resume a run. Either file holds tensors and plain values only."""
        return save_learner(self, name, with_opt=with_opt)

    def load(self, name: str | os.PathLike) -> None:
        """Load weights saved by `save(name)` (tensors only: nothing is unpickled), and the
        optimizer state too when the file has it (`save(name, with_opt=True)`).

            learn.load('224_lastlayer')        # models/224_lastlayer.pth
            learn.load('/abs/path/m.pth')

        The file is checked against the model first: one from another architecture or class
        count is refused, naming the layers and shapes, and leaves the model as it was."""
        load_learner_weights(self, name)

    def load_cycle(self, name: str, cycle: int) -> None:
        """`learn.load_cycle('snap', 2)`: the weights `fit(..., cycle_save_name='snap')` saved
        at the end of SGDR cycle 2 (`models/snap_cyc_2.pth`), for snapshot ensembles."""
        self.load(f'{name}_cyc_{cycle}')
