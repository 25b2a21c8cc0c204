"""Small helpers every other module leans on: arrays, per-group broadcasting, cycle
lengths, atomic writes and the machine's defaults."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ['user_stacklevel', 'to_np', 'T', 'V', 'VV', 'to_gpu', 'children', 'listify', 'cycle_lengths', 'sum_geom',
           'atomic_write', 'default_device', 'num_cpus', 'default_num_workers', 'set_seed', 'subplots',
           'figure']


def to_np(x: Any) -> np.ndarray:
    """A tensor (any device, any grad state) or array-like as a numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def T(a: Any, half: bool = False, cuda: bool = True) -> torch.Tensor:
    """The course's `T(a)`: an array or list as a tensor (int64 for integers, float32 for
    floats, float16 with `half=True`), on the GPU when there is one and `cuda` is True."""
    if not torch.is_tensor(a):
        a = np.array(np.ascontiguousarray(a))
        if a.dtype.kind in 'iu':
            a = torch.from_numpy(a.astype(np.int64))
        elif a.dtype.kind == 'f':
            a = torch.from_numpy(a.astype(np.float16 if half else np.float32))
        else:
            raise TypeError(f'T: cannot make a tensor of {a.dtype} values; pass numbers')
    return to_gpu(a) if cuda else a


def V(x: Any, requires_grad: bool = False, volatile: bool = False) -> torch.Tensor:
    """The course's `V(x)`: `T(x)`, tracking gradients when `requires_grad` (PyTorch's Variable
    is now the tensor itself; `volatile` is accepted and ignored, use `torch.no_grad()`)."""
    t = T(x)
    return t.requires_grad_(True) if requires_grad and t.is_floating_point() else t


def VV(x: Any) -> torch.Tensor:
    """The course's `VV(x)`: `V(x)` for inference (no gradient)."""
    return V(x)


def to_gpu(x: Any) -> Any:
    """The course's `to_gpu(x)`: a tensor or module on the GPU when there is one, else as it is."""
    return x.cuda() if torch.cuda.is_available() and hasattr(x, 'cuda') else x


def children(m: Any) -> list:
    """The course's `children(m)`: a module's direct children as a list (a list or tuple passes
    through), e.g. `nn.Sequential(*children(m)[:-2], ...)`."""
    return list(m) if isinstance(m, (list, tuple)) else list(m.children())


def listify(x: Any, n: int, name: str = 'value', example: str = '') -> list:
    """`x` as a list of `n` values, one per layer group.

    A scalar (or a 1-element sequence) is broadcast; a sequence of the wrong length is an
    error naming the argument and both counts, since a silent truncation would train some
    groups at a rate nobody chose.
    """
    if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.ndarray, torch.Tensor)):
        return [x] * n
    xs = [v.item() if hasattr(v, 'item') else v for v in x]
    if len(xs) == 1:
        return xs * n
    if len(xs) != n:
        hint = f"; pass one per group, e.g. {example}" if example else f"; pass a scalar or {n} values"
        raise ValueError(f"{name} has {len(xs)} values but the model has {n} layer groups{hint}")
    return xs


def cycle_lengths(n_cycle: int, cycle_len: float = 1, cycle_mult: float = 1) -> list[float]:
    """Epochs in each SGDR cycle: `cycle_len * cycle_mult**i` for i < n_cycle.

    >>> cycle_lengths(3, 1, 2)
    [1, 2, 4]
    """
    return [cycle_len * cycle_mult ** i for i in range(n_cycle)]


def sum_geom(a: float, r: float, n: int) -> float:
    """Total epochs of `n` cycles starting at `a` epochs and growing by `r` (r == 1 included)."""
    return a * n if r == 1 else a * (r ** n - 1) / (r - 1)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb') -> Iterator[Any]:
    """Open a temporary file beside `path` and move it into place only once it is complete,
    so an interrupted write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.part', dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def default_device() -> torch.device:
    """CUDA when present, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device('cuda')
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
        return torch.device('mps')
    return torch.device('cpu')


def num_cpus() -> int:
    """Cores this process may use (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """Loader worker processes that suit this machine.

    macOS and Windows start workers by spawning, which breaks in notebooks and in scripts
    without a `__main__` guard, so there the default is to load in the main process.
    """
    if sys.platform in ('darwin', 'win32'):
        return 0
    return min(num_cpus(), 8)


def set_seed(seed: int = 42) -> None:
    """Seed Python, numpy and torch for a repeatable run."""
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_figure_class = None


def _notebook_figure_class() -> type:
    """A Figure that IPython displays exactly once.

    A plot function returns its Figure, and Jupyter's inline backend also displays every open
    figure when the cell ends, so a plot on a cell's last line would appear twice. Whichever
    display comes first draws it and closes it in pyplot, so the backend does not draw it again.
    """
    global _figure_class
    if _figure_class is None:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        class _Figure(Figure):
            def _ipython_display_(self) -> None:
                import io

                from IPython.display import Image, display
                buf = io.BytesIO()
                self.savefig(buf, format='png', bbox_inches='tight')
                display(Image(buf.getvalue()))
                if 'inline' in plt.get_backend() and self.number is not None \
                        and plt.fignum_exists(self.number):
                    plt.close(self)
        _figure_class = _Figure
    return _figure_class


def figure(**kwargs: Any) -> Any:
    """`plt.figure` for the plots the library returns (drawn once in Jupyter)."""
    import matplotlib.pyplot as plt
    return plt.figure(FigureClass=_notebook_figure_class(), **kwargs)


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots` for the plots the library returns (drawn once in Jupyter)."""
    import matplotlib.pyplot as plt
    return plt.subplots(*args, FigureClass=_notebook_figure_class(), **kwargs)


def user_stacklevel() -> int:
    """The `stacklevel` that makes a warning name the first line outside fastlearn (the
    user's `learn.unfreeze()`, however deep inside the library the warning is raised)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2  # level 1 is the function that warns
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
