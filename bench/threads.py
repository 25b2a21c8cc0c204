"""Torch threads, loader workers and OpenMP's wait policy on a small CPU: which split of the
cores trains fastest.

    .venv/bin/python bench/threads.py [--data ../shared/data/dogscats] [--sz 128] [--bs 32]
                                      [--repeats 2] [--configs t2w2 t2w2p t1w2 t2w1 ...]

Each configuration runs in its own process (OpenMP reads its environment when torch loads, so
it cannot change inside one process): build the data and the learner (EfficientNet-Lite0), start
the loader workers, then time `learn.fit(1e-2, 1)` with precompute off (a frozen-body epoch on
augmented images, then validation) and one head epoch on cached activations
(`precompute=True`, after the cache is filled, whose time is reported too).

A configuration is `t<torch threads>w<loader workers>`, plus `p` for `OMP_WAIT_POLICY=PASSIVE`
(threads sleep at the end of a parallel region instead of spinning; what `import fastlearn`
sets when it comes before torch) and `h` for `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`. Without
`p`, torch loads before fastlearn with the policy unset: OpenMP's own default, which spins for a
while before sleeping (what a user who imports torch first gets). `t2w2p` is fastlearn's default
on 2 cores; `t2w2` is torch's.
Configurations alternate, `--repeats` rounds; each figure is the best of its rounds (load only
adds time), printed with the 1-minute load average seen during its runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
CONFIG = re.compile(r'^t(\d+)w(\d+)([ph]*)$')


def child(args) -> None:
    """One configuration, in this process: print one JSON line of timings."""
    import importlib
    import tempfile
    import warnings

    if 'p' not in CONFIG.match(args.child).group(3):
        os.environ.pop('OMP_WAIT_POLICY', None)
        importlib.import_module('torch')  # OpenMP loads now, before fastlearn could set a policy
    from fastlearn.conv_learner import (ConvLearner, ImageClassifierData, efficientnet_lite0,
                                        tfms_from_model, transforms_side_on)
    import torch
    warnings.simplefilter('ignore')
    threads, workers = (int(v) for v in CONFIG.match(args.child).groups()[:2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tfms = tfms_from_model(efficientnet_lite0, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(args.data, bs=args.bs, tfms=tfms, num_workers=workers)
    out, loads = {}, [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix='bench_threads_') as tmp:
        learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=False, quiet=True,
                                       tmp_name=f'{tmp}/tmp', models_name=f'{tmp}/models')
        for dl in (data.trn_dl, data.val_dl, data.fix_dl):
            next(iter(dl))  # workers started before timing
        t = time.perf_counter()
        learn.fit(1e-2, 1)
        out['frozen epoch'] = time.perf_counter() - t
        loads.append(os.getloadavg()[0])
        learn.freeze()
        t = time.perf_counter()
        learn.activations('trn')
        learn.activations('val')
        out['cache fill'] = time.perf_counter() - t
        learn.precompute = True
        learn.fit(1e-2, 1)
        t = time.perf_counter()
        learn.fit(1e-2, 1)
        out['head epoch'] = time.perf_counter() - t
        loads.append(os.getloadavg()[0])
    out['load'] = max(loads)
    print(json.dumps(out), flush=True)


def run_config(config: str, args) -> dict:
    m = CONFIG.match(config)
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    if 'p' in m.group(3):
        env['OMP_WAIT_POLICY'] = 'PASSIVE'
    if 'h' in m.group(3):
        env['GLIBC_TUNABLES'] = 'glibc.malloc.hugetlb=1'
    cmd = [sys.executable, __file__, '--child', config, '--data', str(args.data),
           '--sz', str(args.sz), '--bs', str(args.bs)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA, help='folder with train/ and valid/')
    ap.add_argument('--sz', type=int, default=128)
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--configs', nargs='+', default=['t2w2', 't2w2p', 't1w2', 't2w1', 't2w1p'])
    ap.add_argument('--child', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    bad = [c for c in args.configs if not CONFIG.match(c)]
    if bad:
        ap.error(f'configs look like t2w2, t1w2p or t2w2h; got {bad}')
    print(f"{args.data} sz {args.sz} bs {args.bs}, {os.cpu_count()} cores, best of {args.repeats} | "
          f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()}", flush=True)
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    for r in range(args.repeats):
        for c in (args.configs if r % 2 == 0 else args.configs[::-1]):
            runs[c].append(run_config(c, args))
    base = args.configs[0]
    keys = ['frozen epoch', 'cache fill', 'head epoch']
    best = {c: {k: min(x[k] for x in runs[c]) for k in keys} for c in args.configs}
    print(f"{'config':<8}" + ''.join(f'{k:>24}' for k in keys) + '   load (max)')
    for c in args.configs:
        cells = ''.join(f"{best[c][k]:9.3f}s ({best[base][k] / best[c][k]:4.2f}x {base})"
                        .rjust(24) for k in keys)
        print(f'{c:<8}{cells}   {statistics.median(x["load"] for x in runs[c]):.1f} '
              f'({max(x["load"] for x in runs[c]):.1f})', flush=True)


if __name__ == '__main__':
    main()
