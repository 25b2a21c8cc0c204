"""What tests/test_distributed.py runs in each process torchrun starts (and once in the test
process itself, as the one-process reference):

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py \
        train DATA OUT WEIGHTS

`train`: the tiny architecture with a head without BatchNorm or dropout (so one process and two
compute the same function of the same global batches), lr_find, then every layer group trained one
epoch with the body's BatchNorm frozen, saved, loaded, predicted; then a precompute learner (the standard
head) fills the cache, trains the head and exports. Every file any process opens for writing is
recorded, and each process leaves what it saw in OUT/result_<rank>.npz; a save that rank 0
cannot write raises its error in every process.
`fail`: rank 1 raises before training while rank 0 trains. `hang`: rank 1 sleeps while rank 0
trains and waits for it.
"""
from __future__ import annotations

import builtins
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tiny import tiny_arch_with

from fastlearn.archs import register_arch
from fastlearn.conv_learner import ConvLearner, ImageClassifierData, set_seed, tfms_from_model
from fastlearn.distributed import rank, shard_eval, shard_train

WRITTEN: list[str] = []


def record_writes() -> None:
    """Note every path opened for writing, directly or through `atomic_write`'s temporary file."""
    real_open, real_mkstemp = builtins.open, tempfile.mkstemp

    def opening(file, mode='r', *args, **kwargs):
        if any(c in mode for c in 'wax+'):
            WRITTEN.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        WRITTEN.append(name)
        return fd, name

    builtins.open, tempfile.mkstemp = opening, mkstemp


def learner(arch, data, out: Path, **kw) -> ConvLearner:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return ConvLearner.pretrained(arch, data, tmp_name=str(out / 'tmp'),
                                      models_name=str(out / 'models'), device='cpu', **kw)


def train(data_dir: Path, out: Path, weights: Path) -> dict:
    """Everything the `train` check compares; returns it (the test's reference) and writes it."""
    arch = register_arch(tiny_arch_with(weights), replace=True)
    set_seed(0)
    data = ImageClassifierData.from_paths(data_dir, bs=8, tfms=tfms_from_model(arch, 32),
                                          num_workers=0, test_name='test')
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, data.c))
    learn = learner(arch, data, out, custom_head=head)
    learn.unfreeze()
    learn.bn_freeze(True)
    finder = learn.lr_find(end_lr=1, num_it=3).losses  # then the weights are put back
    vals = learn.fit(1e-2, 1)
    weights_after = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    learn.save('ddp')
    learn.load('ddp')  # what rank 0 wrote, read by every process
    try:  # rank 0 cannot write under a file: every process gets its error, none waits
        learn.save(out / 'models' / 'ddp.pth' / 'not-a-folder.pth')
        error = ''
    except OSError as e:
        error = str(e).replace(str(out), 'OUT')
    preds = learn.predict()
    tta, _ = learn.TTA(n_aug=1)
    text = repr(learn)

    set_seed(0)
    pre = learner(arch, data, out, precompute=True)
    pre_vals = pre.fit(1e-2, 1)
    acts = pre.activations('trn')
    pre.export(out / 'export.pth')
    # what each process reads: its share of every training batch, its part of the validation set
    trn_share = [len(b) for b in shard_train(data.trn_dl).batch_sampler]
    val_share = [i for b in shard_eval(data.val_dl)[0].batch_sampler for i in b]
    result = {'trn_share': np.array(trn_share), 'val_share': np.array(val_share),
              'vals': np.array(vals), 'error': np.array(error), 'lr_find': np.array(finder), 'preds': preds, 'tta': tta,
              'repr': np.array(text),
              'pre_vals': np.array(pre_vals), 'acts': acts,
              'head': np.concatenate([p.detach().reshape(-1).numpy() for p in pre.model.head.parameters()]),
              **{f'w:{k}': v.numpy() for k, v in weights_after.items()}}
    return result


def main() -> None:
    torch.set_num_threads(1)
    mode, data_dir, out, weights = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    if mode == 'train':
        record_writes()
        result = train(data_dir, out, weights)
        written = [w for w in WRITTEN if 'result_' not in w]
        np.savez(out / f'result_{rank()}.npz', written=np.array(written, dtype=str), **result)
        return
    arch = register_arch(tiny_arch_with(weights), replace=True)
    data = ImageClassifierData.from_paths(data_dir, bs=8, tfms=tfms_from_model(arch, 32), num_workers=0)
    learn = learner(arch, data, out)
    if rank() == 1:
        if mode == 'fail':
            raise ValueError(f'rank 1 failed on purpose at {time.time():.3f}')
        print(f'rank 1 stuck at {time.time():.3f}', flush=True)
        time.sleep(120)  # 'hang': never reaches the fit rank 0 waits in
    learn.fit(1e-2, 1)
    print(f'rank {rank()} finished', flush=True)


if __name__ == '__main__':
    main()
