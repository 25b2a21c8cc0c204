"""The `fastlearn` command: the course's lesson-1 recipe on a folder of images, from a shell.

    fastlearn train data/dogscats                 # -> ./fastlearn-out/dogscats/report.md
    fastlearn predict fastlearn-out/dogscats/model.pth photo.jpg
    fastlearn demo                                # scikit-learn's digits: offline, a few minutes
    fastlearn train data/dogscats --nproc 2       # 2 processes, started by torch.distributed.run

The recipe itself is `run_recipe` (in `demo.py`, for notebooks and scripts too). torch and
matplotlib are imported inside the functions, so `fastlearn --help` answers at once.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .demo import AUGS, DEMO, LR_RANGE, recipe_epochs, run_recipe, write_digits

__all__ = ['main', 'build_parser', 'run_recipe']

TRAIN = {'arch': 'efficientnet_lite0', 'sz': 128, 'bs': 32, 'epochs': 3, 'aug': 'side_on',
         'lr_ratio': 10, 'workers': None, 'bn_freeze': None}


def _fail(message: Any, status: int = 1, prog: str = 'fastlearn') -> NoReturn:
    """One line on stderr, then exit: a user's mistake is not a traceback."""
    print(f'{prog}: error: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
    raise SystemExit(status)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f'fastlearn: warning: {" ".join(str(message).split())}', file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line: the usage is one --help away
        _fail(f'{message} (see {self.prog} --help)', 2, self.prog)


def _number(kind: type, low: float, rule: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= low:  # `not >=` also refuses nan
            raise argparse.ArgumentTypeError(f'must be {rule}, got {text!r}')
        return value
    return parse


def _recipe_options(p: argparse.ArgumentParser, d: dict) -> None:
    positive = _number(int, 1, 'a positive integer')
    p.add_argument('--arch', default=d['arch'], metavar='NAME',
                   help=f"a name from fastlearn's architecture table (default {d['arch']}, whose "
                        'weights come with fastlearn; others, e.g. resnet34, download theirs '
                        'once; an unknown name lists them)')
    p.add_argument('--sz', type=positive, default=d['sz'],
                   help=f"image size in pixels (default {d['sz']})")
    p.add_argument('--bs', type=positive, default=d['bs'], help=f"batch size (default {d['bs']})")
    p.add_argument('--epochs', type=positive, default=d['epochs'], metavar='N',
                   help='scales the recipe: 1 epoch on precomputed activations, N with augmentation, '
                        f"N cycles with cycle_mult 2 (2^N-1 epochs) on all layers (default {d['epochs']}: "
                        f"{' + '.join(map(str, recipe_epochs(d['epochs'])))}, as the course)")
    p.add_argument('--lr', type=_number(float, 1e-12, 'a positive number'),
                   help=f"the head's learning rate (default: lr_find's suggestion, kept within "
                        f'{LR_RANGE[0]:g}..{LR_RANGE[1]:g})')
    p.add_argument('--lr-ratio', type=_number(float, 1, 'a number >= 1'), default=d['lr_ratio'],
                   metavar='R', help=f"then all layers train at lr/R^2, lr/R, lr, earliest first "
                                     f"(default {d['lr_ratio']}; the course used 10 for photos like "
                                     "ImageNet's, 3 for others)")
    p.add_argument('--aug', choices=sorted(AUGS), default=d['aug'],
                   help=f"augmentation: rotation and lighting, side_on adds left-right flips, top_down "
                        f"also quarter turns (default {d['aug']})")
    p.add_argument('--bn-freeze', action=argparse.BooleanOptionalAction, default=d['bn_freeze'],
                   help="keep (or with --no-bn-freeze, train) the body's BatchNorm statistics once "
                        + ("unfrozen (default: the architecture table's choice; efficientnet_lite0 keeps "
                           "them, docs/recipe.md says why)" if d['bn_freeze'] is None else
                           f"unfrozen (default: {'keep' if d['bn_freeze'] else 'train'} them; the digits "
                           "are far from ImageNet, docs/troubleshooting.md has the figures)"))
    default = 'one per core; 0 on macOS and Windows' if d['workers'] is None else d['workers']
    p.add_argument('--workers', type=_number(int, 0, 'an integer >= 0'), default=d['workers'],
                   metavar='N', help=f'image-loading processes (default {default})')
    p.add_argument('--seed', type=_number(int, 0, 'an integer >= 0'), default=42,
                   help='seed for Python, numpy and torch: the same seed, the same run on one machine '
                        '(default 42)')
    p.add_argument('--device', metavar='DEVICE',
                   help="where to train: cpu, cuda, cuda:1, mps (default: a GPU when there is one, "
                        "else the CPU)")
    p.add_argument('--quiet', action='store_true',
                   help='print only the accuracy and where the files are')
    p.add_argument('--nproc', type=positive, default=1, metavar='N',
                   help='train on N processes that torch.distributed.run (torchrun) starts on this '
                        'machine, each on its share of every batch: one per GPU (default 1; '
                        'docs/distributed.md)')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='fastlearn', description='Transfer learning as the 2018 fastai course '
                     'taught it: train an image classifier on a folder, predict with it.')
    parser.add_argument('--version', action='version', version=f'fastlearn {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    train = sub.add_parser('train', help='train and evaluate a classifier on an image folder',
                           description='Fine-tune a pretrained network on PATH/train/<class>/* and '
                           'evaluate it on PATH/valid/<class>/*; write the model, plots and report.md '
                           'to --out. Nothing is written into PATH.')
    train.add_argument('path', metavar='PATH',
                       help='a folder holding train/<class>/ and valid/<class>/')
    train.add_argument('--out', metavar='DIR',
                       help='output folder (default ./fastlearn-out/<PATH name>)')
    _recipe_options(train, TRAIN)
    predict = sub.add_parser('predict', help='classify images with a model from fastlearn train',
                             description='Print IMAGE<tab>class<tab>probability for each image.')
    predict.add_argument('model', metavar='MODEL', help='the model.pth that fastlearn train wrote')
    predict.add_argument('images', metavar='IMAGE', nargs='+', help='image files')
    demo = sub.add_parser('demo', help="train on scikit-learn's digits (no network, a few minutes)",
                          description="Write scikit-learn's 1797 handwritten digits as an image folder "
                          '(DIR/digits) and run fastlearn train on it, with settings tuned for a CPU.')
    demo.add_argument('--out', metavar='DIR', help='output folder (default ./fastlearn-out/demo)')
    _recipe_options(demo, DEMO)
    for p, run in ((train, _train_command), (predict, _predict_command), (demo, _demo_command)):
        p.set_defaults(run=run, parser=p)
    return parser


@contextlib.contextmanager
def _out_dir(out: str | os.PathLike, data: Path | None, prog: str) -> Iterator[Path]:
    """The output folder, created; never the data folder or inside it. A command that fails
    before writing anything into a folder it created removes it again."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        _fail(f'--out {out} is a file, not a folder', 2, prog)
    if data is not None and (out == data.resolve() or data.resolve() in out.parents):
        _fail(f'--out {out} is inside the data folder {data}; fastlearn never writes there: '
              'pass an --out outside it', 2, prog)
    created = not out.exists()
    try:  # find out now, not after the training, that the results cannot be written
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        _fail(f'cannot write to --out {out}: {e.strerror or e}', 2, prog)
    try:
        yield out
    except BaseException:
        if created:
            with contextlib.suppress(OSError):  # (not empty, or another process removed it)
                out.rmdir()
        raise


def _check_arch(args: argparse.Namespace) -> None:
    from .archs import ARCHS  # imports torch: after the cheap checks, before anything is written
    if args.arch not in ARCHS:
        _fail(f'unknown architecture {args.arch!r}; known: {", ".join(sorted(ARCHS))}', 2, args.prog)
    # Build it with its weights now (a second or two): a missing package (timm, the weights'
    # package) or weights that cannot be downloaded fail here, not after the folders are written.
    ARCHS[args.arch](pretrained=True)


def _check_device(args: argparse.Namespace) -> None:
    if args.device is None:
        return
    import torch
    try:
        device = torch.device(args.device)
    except RuntimeError:
        _fail(f'--device {args.device!r} is not a device; pass cpu, cuda, cuda:1 or mps', 2, args.prog)
    available = {'cpu': lambda: True, 'cuda': torch.cuda.is_available,
                 'mps': lambda: getattr(torch.backends, 'mps', None) is not None
                 and torch.backends.mps.is_available()}
    if not available.get(device.type, lambda: False)():
        _fail(f'--device {args.device}: no such device on this machine; leave --device out to use '
              'what there is', 2, args.prog)
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        _fail(f'--device {args.device}: this machine has {torch.cuda.device_count()} CUDA '
              f'device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}', 2, args.prog)


def _run(args: argparse.Namespace, path: Path, out: Path) -> None:
    r = run_recipe(path, args.arch, out, sz=args.sz, bs=args.bs, epochs=args.epochs, lr=args.lr,
                   lr_ratio=args.lr_ratio, aug=args.aug, bn_freeze=args.bn_freeze,
                   workers=args.workers, quiet=args.quiet, seed=args.seed, device=args.device)
    from .distributed import is_main
    if not is_main():
        return
    print(f'accuracy: {r.accuracy:.4f} without TTA, {r.accuracy_tta:.4f} with TTA '
          f'({r.n_valid} validation images; {sum(r.epochs)} epochs in {r.seconds:.0f} s)')
    print(f'wrote {r.out}: report.md, {", ".join(r.files.values())}')


def _train_command(args: argparse.Namespace) -> None:
    path = Path(args.path).expanduser()
    if not path.is_dir():
        _fail(f'no folder at {path}', 2, args.prog)
    missing = [s for s in ('train', 'valid') if not (path / s).is_dir()]
    if missing:
        _fail(f'{path} has no {" and no ".join(s + "/" for s in missing)} folder: expected '
              f'{path / "train"}/<class>/<image> and {path / "valid"}/<class>/<image>', 2, args.prog)
    _check_arch(args)
    _check_device(args)
    with _out_dir(args.out or Path('fastlearn-out') / (path.resolve().name or 'data'), path,
                  args.prog) as out:
        _run(args, path, out)


def _demo_command(args: argparse.Namespace) -> None:
    _check_arch(args)
    _check_device(args)
    with _out_dir(args.out or Path('fastlearn-out') / 'demo', None, args.prog) as out:
        if not args.quiet:
            print(f"scikit-learn's handwritten digits as an image folder: {out / 'digits'}", flush=True)
        from .distributed import main_only
        _run(args, main_only(write_digits, out / 'digits'), out)


def _predict_command(args: argparse.Namespace) -> None:
    model = Path(args.model)
    if not model.is_file():
        _fail(f'no model file at {model}; fastlearn train writes one (model.pth in its --out)', 2,
              args.prog)
    from .export import load_learner
    try:
        predictor = load_learner(model)
    except ValueError as e:
        _fail(e, 2, args.prog)
    failed = 0
    for image in args.images:
        try:
            cls, p = predictor.predict_image(image)
        except (OSError, ValueError) as e:  # a missing or unreadable image: say so, go on
            failed += 1
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            print(f'{args.prog}: error: {image}: {" ".join(str(reason).split())}', file=sys.stderr,
                  flush=True)
            continue
        print(f'{image}\t{cls}\t{p:.4f}', flush=True)
    if failed:
        raise SystemExit(1)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip or a.startswith('--nproc='):
            skip = False
            continue
        skip = a == '--nproc'
        if not skip:
            out.append(a)
    return out


def _launch(argv: list[str], n: int, prog: str) -> int:
    """The same command in `n` processes, started by torch's launcher (`torchrun --standalone`),
    each process with its share of the machine's cores."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from .core import num_cpus
    os.environ.setdefault('OMP_NUM_THREADS', str(max(num_cpus() // n, 1)))
    try:
        torchrun(['--standalone', f'--nproc_per_node={n}', '--module', 'fastlearn',
                  *_without_nproc(argv)])
    except ChildFailedError as e:
        first = min(e.failures.items())[1] if e.failures else None
        code = f' (exit status {first.exitcode})' if first is not None else ''
        _fail(f'one of the {n} processes failed{code}; its error is printed above', 1, prog)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`fastlearn ...`: returns 0, or raises SystemExit(2) for a usage error or SystemExit(1)
    for a failure, after one line on stderr. `--nproc N` runs the command in N processes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would blame `fastlearn`; the option was given to the subcommand
        args.parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    args.prog = f'fastlearn {args.command}'
    if getattr(args, 'nproc', 1) > 1:
        from .distributed import launched
        if not launched():  # under the launcher, each process runs the command itself
            return _launch(argv, args.nproc, args.prog)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args.run(args)
        except KeyboardInterrupt:
            _fail('interrupted', 130, args.prog)
        except Exception as e:  # noqa: BLE001 - expected failures get one line, bugs a traceback
            from .archs import WeightsUnavailableError
            if not isinstance(e, (OSError, ValueError, ImportError, WeightsUnavailableError)):
                raise
            _fail(e, 1, args.prog)
    return 0
