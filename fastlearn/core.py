"""Small helpers every other module leans on: arrays, per-group broadcasting, cycle
lengths, atomic writes and the machine's defaults."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

__all__ = ['user_stacklevel', 'to_np', 'T', 'V', 'VV', 'to_gpu', 'children', 'listify',
           'cycle_lengths', 'sum_geom', 'atomic_write', 'remove_dead_parts', 'default_mode',
           'load_tensors', 'is_safetensors', 'check_state_dict', 'default_device', 'num_cpus', 'default_num_workers',
           'set_seed', 'subplots', 'figure']


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


# Errors that mean the disk (or the user's quota) is full, wherever they surface: torch reports
# them as "enforce fail at inline_container.cc" with the OSError only in the exception's context.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# A temporary file's name carries this machine's tag and the writer's pid, so a later write can
# tell a dead writer's leftover (removed) from a live writer's file (never touched).
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_PART = re.compile(r'\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[A-Za-z0-9_]+\.part')
_swept: set[str] = set()  # folders already cleared of dead writers' files by this process


def default_mode(directory: bool = False) -> int:
    """The permissions a plain `open()` (or `mkdir`) gives a new file here: 0o666 (0o777) less
    the umask, read without changing it where Linux allows (other threads may be writing)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_alive(pid: int) -> bool:
    if sys.platform == 'win32':  # os.kill there terminates the process: never ask
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is another user's: not ours to judge
    return True


def remove_dead_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that `atomic_write` calls in `folder` left when their process
    died (`kill -9`, power loss): only those written on this machine by a pid that no longer
    exists, so a concurrent writer's file is never touched. Returns the files removed."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for e in it:
            m = _PART.fullmatch(e.name) if e.name.endswith('.part') else None
            if m and m['host'] == _HOST_TAG and not _pid_alive(int(m['pid'])):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
    return removed


def _disk_full(e: BaseException | None) -> OSError | None:
    """The full-disk OSError behind `e` (itself, its cause or its context), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb') -> Iterator[Any]:
    """Open a temporary file beside `path` and move it into place only once it is complete,
    so an interrupted write leaves the previous file intact.

    The file gets the permissions a plain `open()` would give (`0o666` less the umask, or the
    mode of the file it replaces), not `mkstemp`'s private 0600. The first write to a folder in
    a process removes what writers killed mid-write left there (`remove_dead_parts`). A full
    disk is reported as an `OSError` naming `path`, whatever library was writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Once per folder and process: resize writes thousands of files into one folder.
    if str(path.parent) not in _swept:
        remove_dead_parts(path.parent)
        _swept.add(str(path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.{_HOST_TAG}-{os.getpid()}.', suffix='.part',
                               dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            try:
                perms = stat.S_IMODE(os.stat(path).st_mode)
            except OSError:
                perms = default_mode()
            if hasattr(os, 'fchmod'):  # POSIX; on Windows mkstemp's file is not private anyway
                os.fchmod(f.fileno(), perms)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = _disk_full(e)
        if full is not None and full.errno is not None:  # (_disk_full matched its errno)
            raise OSError(full.errno, f'no space left on device while writing {path} '
                          f'({os.strerror(full.errno)}); the previous file, if any, is unchanged. '
                          'Free some space, or write to another disk') from e
        raise


def load_tensors(path: str | os.PathLike, *, map_location: Any = 'cpu',
                 written_by: str = 'learn.save(name)') -> Any:
    """`torch.load(path, weights_only=True)` with errors that name the file and say what it is:
    empty or truncated, damaged, holding pickled Python objects (never unpickled here: they can
    run code), or not a PyTorch file at all. Never suggests `weights_only=False`."""
    import pickle
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, ...
        why = _tensor_file_problem(path, e, pickle.UnpicklingError)
    raise ValueError(f'{path} {why}; write it again with {written_by}, or restore it from a '
                     'backup') from None


def is_safetensors(path: str | os.PathLike) -> bool:
    """Does the file start as a safetensors file does (a little-endian u64 header length, then the
    JSON header's `{`)? What `learn.export` writes; `torch.save` files start with a zip or pickle."""
    with open(path, 'rb') as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') > 1


def _tensor_file_problem(path: Path, e: Exception, unpickling: type) -> str:
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head:
        return 'is empty (0 bytes): a save that never completed or a truncated copy'
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80':  # torch's zip, or a legacy pickle
        if isinstance(e, unpickling):
            found = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
            which = f', such as {found.group(1)}' if found else ''
            return (f'holds pickled Python objects (a whole model or learner, or custom '
                    f'classes{which}), not only tensors, and fastlearn never unpickles code from a '
                    'file: it loads files of tensors, as learn.save and learn.export write them')
        detail = (str(e).splitlines() or [''])[0].split('. ')[0][:120]  # torch's first sentence
        return f'is truncated or damaged ({type(e).__name__}: {detail})'
    return 'is not a PyTorch file (no zip or pickle header): perhaps another format or a renamed file'


def check_state_dict(model: torch.nn.Module, state: Any, path: str | os.PathLike, *,
                     fix: str = 'load it into a learner built the same way. The model is unchanged'
                     ) -> None:
    """Raise a ValueError naming `path`, the layers and their shapes when `state` does not fit
    `model` exactly; checked before anything is copied, so a failed load changes nothing."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path} does not hold a state dict (a mapping of layer names to tensors); '
                         'pass a file written by learn.save(name)')
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f'{k}: {list(state[k].shape)} in the file, {list(v.shape)} in the model'
              for k, v in want.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    parts = ([f'shapes differ for {len(shapes)} layer(s): ' + '; '.join(shapes[:5])] if shapes else []) + \
            ([f'{len(missing)} layer(s) missing from the file: {missing[:5]}'] if missing else []) + \
            ([f'{len(unexpected)} layer(s) the model lacks: {unexpected[:5]}'] if unexpected else [])
    raise ValueError(f'{path} does not fit this model: {". ".join(parts)}. It was saved from another '
                     f'architecture, cut or number of classes; {fix}')

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
    """Loader worker processes that suit this machine: one per core (at most 8), shared among
    the processes a launcher started on it (torchrun's `LOCAL_WORLD_SIZE`).

    macOS and Windows start workers by spawning, which breaks in notebooks and in scripts
    without a `__main__` guard, so there the default is to load in the main process.
    """
    if sys.platform in ('darwin', 'win32'):
        return 0
    return min(num_cpus() // max(int(os.environ.get('LOCAL_WORLD_SIZE', 1)), 1), 8)


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
    frame: FrameType | None
    frame, level = sys._getframe(2), 2  # level 1 is the function that warns
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
