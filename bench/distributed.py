"""One process against several: images/s of a training epoch, cache-fill seconds and the
per-step gradient all-reduce, with the same script run by `torchrun --nproc_per_node=N`.

    .venv/bin/python bench/distributed.py [--data ../shared/data/dogscats] [--sz 128] [--bs 32]
                                          [--nproc 1 2] [--device cpu|cuda] [--epochs 2]
                                          [--only fill frozen unfrozen]

For each N in `--nproc`, torch's launcher starts N copies of this script (`--worker`), which
build the course's learner (EfficientNet-Lite0, its offline weights, side-on augmentation,
`bs` the global batch: each process trains on bs/N of every batch) and time, in this order:

- cache fill: `learn.activations('trn'); learn.activations('val')` on a fresh cache (each process
  computes its shard, rank 0 writes the files); includes starting the loaders' workers, as a
  user's first fill does;
- frozen epoch: `learn.precompute = False; learn.fit(1e-2, 1)`, the last of `--epochs` (the
  first starts the workers); images/s = (train + valid images) / seconds;
- unfrozen epoch: `learn.unfreeze(); learn.fit(1e-3, 1)`, likewise;
- CPU seconds of each phase, the training processes' own (not their loader workers) added over
  the ranks: on a shared machine wall seconds follow the other jobs, CPU seconds less so;
- all-reduce: the mean time of one all-reduce of a float32 buffer the size of the trainable
  parameters (what DistributedDataParallel sends each step, in buckets), for the head and for
  the whole model: the communication a step adds.

On a CPU the processes share the machine's cores (torchrun gives each one thread, the single
process has them all), so N processes cannot be faster: the figure is the overhead. On a machine
with N GPUs (`--device cuda`, one process per GPU, NCCL) the same command measures the scaling.
Rank 0 prints one `BENCH {...}` line per run; the table at the end sets them side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'


def worker(args: argparse.Namespace) -> None:
    from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, efficientnet_lite0,
                                        tfms_from_model, transforms_side_on)
    from fastlearn.core import set_seed
    from fastlearn.distributed import is_main, world_size

    import torch
    import torch.distributed as dist
    warnings.simplefilter('ignore')
    set_seed(0)
    tfms = tfms_from_model(efficientnet_lite0, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(args.data, bs=args.bs, tfms=tfms, num_workers=args.workers)
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=False, quiet=True,
                                   device=args.device, tmp_name=str(args.tmp / 'tmp'),
                                   models_name=str(args.tmp / 'models'))
    n_images = len(data.trn_ds) + len(data.val_ds)
    res = {'nproc': world_size(), 'device': str(learn.device), 'threads': torch.get_num_threads(),
           'workers': data.num_workers, 'images': n_images}

    def timed(name: str, fn) -> None:
        """`res[name + '_s']`: wall seconds; `res[name + '_cpu']`: CPU seconds of the training
        processes, all ranks added up (not their loader workers)."""
        if dist.is_initialized():
            dist.barrier()
        if learn.device.type == 'cuda':
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if learn.device.type == 'cuda':
            torch.cuda.synchronize()
        res[f'{name}_s'], cpu = time.perf_counter() - t, [time.process_time() - c]
        if dist.is_initialized():
            cpu = [None] * dist.get_world_size()
            dist.all_gather_object(cpu, time.process_time() - c)
        res[f'{name}_cpu'] = sum(cpu)

    if 'fill' in args.only:
        timed('fill', lambda: (learn.activations('trn'), learn.activations('val')))
    if 'frozen' in args.only:
        for _ in range(args.epochs):
            timed('frozen', lambda: learn.fit(1e-2, 1))
        res['frozen_img_s'] = n_images / res['frozen_s']
    res['head_allreduce_ms'] = allreduce_ms(learn.model.head, learn.device)
    if 'unfrozen' in args.only:
        learn.unfreeze()
        for _ in range(args.epochs):
            timed('unfrozen', lambda: learn.fit(1e-3, 1))
        res['unfrozen_img_s'] = n_images / res['unfrozen_s']
    res['model_allreduce_ms'] = allreduce_ms(learn.model, learn.device)
    res['steps'] = len(data.trn_dl)
    if is_main():
        print('BENCH ' + json.dumps(res), flush=True)


def allreduce_ms(module, device, reps: int = 20) -> float:
    """Mean ms of one all-reduce of float32 gradients the size of `module`'s parameters."""
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        return 0.0
    buf = torch.zeros(sum(p.numel() for p in module.parameters()), device=device)
    dist.all_reduce(buf)  # warm the connection
    dist.barrier()
    t = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(buf)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t) / reps


def launch(args: argparse.Namespace, n: int) -> dict:
    """This script in `n` processes (one process: plainly, no launcher); rank 0's figures."""
    with tempfile.TemporaryDirectory(prefix='bench_distributed_') as tmp:
        mine = [__file__, '--worker', '--data', str(args.data), '--sz', str(args.sz), '--bs',
                str(args.bs), '--epochs', str(args.epochs), '--tmp', tmp, '--only', *args.only]
        mine += ['--device', args.device] if args.device else []
        mine += ['--workers', str(args.workers)] if args.workers is not None else []
        cmd = ([sys.executable] if n == 1 else
               [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}'])
        run = subprocess.run(cmd + mine, capture_output=True, text=True)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith('BENCH ')]
    if run.returncode or not lines:
        sys.exit(f'{n} process(es) failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}')
    return json.loads(lines[-1][6:])


def table(results: list[dict]) -> None:
    base = results[0]
    rows = [('cache fill s', 'fill_s', '{:.1f}'), ('  CPU s, all ranks', 'fill_cpu', '{:.1f}'),
            ('frozen epoch s', 'frozen_s', '{:.1f}'), ('  CPU s, all ranks', 'frozen_cpu', '{:.1f}'),
            ('frozen images/s', 'frozen_img_s', '{:.1f}'), ('unfrozen epoch s', 'unfrozen_s', '{:.1f}'),
            ('  CPU s, all ranks', 'unfrozen_cpu', '{:.1f}'), ('unfrozen images/s', 'unfrozen_img_s', '{:.1f}'),
            ('all-reduce ms, head', 'head_allreduce_ms', '{:.2f}'),
            ('all-reduce ms, model', 'model_allreduce_ms', '{:.2f}')]
    print(f"{'':<22}" + ''.join(f"{r['nproc']} process(es){'':<6}" for r in results))
    for label, key, fmt in rows:
        if key not in base:
            continue
        cells = []
        for r in results:
            ratio = f" ({r[key] / base[key]:.2f}x)" if base[key] and r is not base else ''
            cells.append(f'{fmt.format(r[key])}{ratio}'.ljust(20))
        print(f'{label:<22}' + ''.join(cells))
    print(f"{'setup':<22}" + ''.join(f"{r['device']}, {r['threads']} thr, {r['workers']} wkr".ljust(20)
                                     for r in results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA)
    ap.add_argument('--sz', type=int, default=128)
    ap.add_argument('--bs', type=int, default=32, help='the global batch (each process: bs/N)')
    ap.add_argument('--nproc', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--device', default=None, help='cpu or cuda (default: a GPU when there is one)')
    ap.add_argument('--workers', type=int, default=None, help='loader workers per process (default: the cores shared)')
    ap.add_argument('--epochs', type=int, default=2, help='epochs per phase; the last is timed')
    ap.add_argument('--only', nargs='+', default=['fill', 'frozen', 'unfrozen'],
                    choices=['fill', 'frozen', 'unfrozen'])
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--tmp', type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    print(f"{args.data} sz {args.sz} global bs {args.bs}, nproc {args.nproc}, {os.cpu_count()} cores | "
          f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()}", flush=True)
    results = []
    for n in args.nproc:
        results.append(launch(args, n))
        print(f"{n} process(es): {json.dumps(results[-1])} | load {os.getloadavg()[0]:.1f}", flush=True)
    table(results)


if __name__ == '__main__':
    main()
