"""Several processes with torch.distributed (gloo on the CPU), started by torch's launcher:
one epoch on 2 processes gives one process's weights for the same global batches, only rank 0
writes files, metrics agree across ranks, the cache is filled in shards and reused, a failing
or stuck rank ends the run; the hooks do nothing outside a launcher; mixed precision.

The processes run tests/ddp_worker.py (one torch thread each); the one-process reference runs
the same function here. The test process itself keeps its network block: only the processes it
starts talk to each other, over 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ddp_worker
from conftest import make_image_folder
from test_learner import _one_thread, get_data, get_learner  # noqa: F401 (fixtures)
from fastlearn import distributed
from fastlearn.conv_learner import ImageClassifierData, set_seed, tfms_from_model
from fastlearn.distributed import _EvalShard, _TrainShard
from fastlearn.precision import FP32, Precision

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('ddp_worker.py')
LAUNCHER = [sys.executable, '-m', 'torch.distributed.run']


def launch(args: list[str], *, timeout: float = 300, dist_timeout: float = 120,
           wait: bool = True) -> subprocess.Popen | tuple[int, str, float]:
    """Run torch's launcher with `args` in its own session (so a timeout can end all of its
    processes); returns (exit status, stdout and stderr, seconds)."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
           'OMP_NUM_THREADS': '1', 'FASTLEARN_DIST_TIMEOUT': str(dist_timeout), 'MPLBACKEND': 'Agg',
           'GLOO_SOCKET_IFNAME': 'lo'}
    p = subprocess.Popen(LAUNCHER + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    if not wait:
        return p
    return finish(p, timeout)


def finish(p: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    start = time.time()
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f'the launcher ran past {timeout} s:\n{out[-3000:]}')
    return p.returncode, out, time.time() - start


def free_port() -> int:
    with socket.socket() as s:  # bind, not connect: allowed in the test process
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp('ddp')
    return make_image_folder(root / 'data', n_test=3), root, tiny_weights


@pytest.fixture(scope='module')
def reference(setup):
    """The one-process run of the same function, here in the test process."""
    data, root, weights = setup
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ddp_worker.train(data, root / 'one', weights)
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope='module')
def two(setup):
    """Two processes on this machine: `torchrun --standalone --nproc_per_node=2`."""
    data, root, weights = setup
    out = root / 'two'
    out.mkdir()
    rc, log, _ = launch(['--standalone', '--nproc_per_node=2', str(WORKER), 'train', str(data),
                         str(out), str(weights)])
    assert rc == 0, log[-4000:]
    return out, log, [dict(np.load(out / f'result_{r}.npz')) for r in (0, 1)]


def weights_of(result: dict) -> dict:
    return {k: v for k, v in result.items() if k.startswith('w:')}


def test_one_epoch_on_two_processes_gives_one_process_weights(two, reference, setup):
    _, _, (r0, r1) = two
    ref = weights_of(reference)
    assert weights_of(r0).keys() == ref.keys() and len(ref) > 10
    for k, v in ref.items():
        np.testing.assert_allclose(r0[k], v, rtol=0, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(r1[k], r0[k], err_msg=k)  # DDP keeps the copies identical
    pretrained = torch.load(setup[2], weights_only=True)  # the body trained: it moved
    moved = [np.abs(pretrained[k].numpy() - r0[f'w:body.{k}']).max() for k in pretrained
             if k.endswith('0.weight') and k.startswith('block')]
    assert len(moved) == 3 and min(moved) > 1e-4, moved


def test_each_process_reads_its_share(two, reference):
    _, _, (r0, r1) = two
    assert list(reference['trn_share']) == [8, 8, 8] and list(reference['val_share']) == list(range(8))
    assert list(r0['trn_share']) == list(r1['trn_share']) == [4, 4, 4]  # half of each global batch
    assert list(r0['val_share']) == [0, 1, 2, 3] and list(r1['val_share']) == [4, 5, 6, 7]


def test_metrics_lr_find_and_predictions_agree_across_ranks(two, reference):
    _, _, (r0, r1) = two
    for k in ('vals', 'pre_vals', 'preds', 'tta', 'acts', 'head', 'lr_find'):
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    np.testing.assert_allclose(r0['vals'], reference['vals'], atol=1e-6)
    assert len(r0['lr_find']) >= 2  # lr_find's smoothed losses of the global batches
    np.testing.assert_allclose(r0['lr_find'], reference['lr_find'], atol=1e-6)
    np.testing.assert_allclose(r0['preds'], reference['preds'], atol=1e-5)  # gathered, in order
    assert r0['preds'].shape == (8, 2) and r0['tta'].shape == (2, 8, 2)
    np.testing.assert_allclose(r0['acts'], reference['acts'], atol=1e-5)  # sharded cache fill


def test_only_rank_0_writes_files(two):
    out, _, (r0, r1) = two
    assert list(r1['written']) == []
    # atomic_write's temporary files, named after the file each becomes
    written = sorted(re.fullmatch(r'\.(.+)\.[0-9a-f]{8}-\d+\.\w+\.part', Path(w).name).group(1)
                     for w in r0['written'])
    cache = sorted(p.name for p in (out / 'tmp').iterdir())
    assert written == sorted(['ddp.pth', 'export.pth', *cache]), written
    assert [c[:9] for c in cache] == ['x_act_trn', 'x_act_val']
    assert (out / 'models' / 'ddp.pth').is_file() and (out / 'export.pth').is_file()


def test_an_error_in_rank_0s_write_is_raised_in_every_process(two, reference):
    _, _, (r0, r1) = two
    assert str(r1['error']) == str(r0['error']) == str(reference['error'])
    assert "cannot save 'OUT/models/ddp.pth/not-a-folder.pth'" in str(r0['error'])


def test_the_table_and_repr_say_how_many_processes_train(two):
    _, log, (r0, _) = two
    # two fits, each printed once (by rank 0) under its title line
    assert log.count('2 processes (torch.distributed, gloo)\nepoch       trn_loss') == 2, log[-3000:]
    assert log.count('epoch       trn_loss') == 2
    assert '  trains on 2 processes (torch.distributed, gloo)' in str(r0['repr'])


def test_the_cache_the_processes_filled_serves_a_later_run(two, setup, monkeypatch, tiny_arch):
    out, _, (r0, _) = two
    data_dir, _, _ = setup

    def no_compute(*args, **kwargs):
        raise AssertionError('the cache was computed again')
    monkeypatch.setattr('fastlearn.precompute.compute_activations', no_compute)
    set_seed(0)
    data = ImageClassifierData.from_paths(data_dir, bs=8, tfms=tfms_from_model(tiny_arch, 32),
                                          num_workers=0, test_name='test')
    learn = ddp_worker.learner(tiny_arch, data, out, precompute=True)
    np.testing.assert_array_equal(learn.activations('trn'), r0['acts'])


def test_a_failing_rank_ends_every_process(setup):
    data, root, weights = setup
    # A long collective timeout: what ends rank 0 here is the launcher seeing rank 1 fail.
    rc, log, _ = launch(['--standalone', '--nproc_per_node=2', str(WORKER), 'fail', str(data),
                         str(root / 'fail'), str(weights)], dist_timeout=600, timeout=300)
    assert rc != 0
    assert 'ValueError: rank 1 failed on purpose' in log
    failed = float(re.search(r'rank 1 failed on purpose at (\d+\.\d+)', log).group(1))
    assert time.time() - failed < 60, log[-3000:]  # long before the 600 s timeout
    assert 'rank 0 finished' not in log


@pytest.mark.slow
def test_a_stuck_rank_ends_the_run_after_the_timeout(setup):
    data, root, weights = setup
    rc, log, _ = launch(['--standalone', '--nproc_per_node=2', str(WORKER), 'hang', str(data),
                         str(root / 'hang'), str(weights)], dist_timeout=5, timeout=300)
    assert rc != 0 and 'rank 0 finished' not in log
    stuck = float(re.search(r'rank 1 stuck at (\d+\.\d+)', log).group(1))
    assert time.time() - stuck < 100, log[-3000:]  # rank 1 sleeps 120 s: it never woke
    assert re.search(r'[Tt]imed? ?out', log), log[-3000:]


@pytest.mark.slow
def test_two_machines_train_together(setup, reference):
    """Two launchers, one process each, meeting over c10d on 127.0.0.1 as two machines would."""
    data, root, weights = setup
    out = root / 'nodes'
    out.mkdir()
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    common = ['--nnodes=2', '--nproc_per_node=1', '--rdzv_backend=c10d',
              f'--rdzv_endpoint=127.0.0.1:{port}', f'--rdzv_id={run_id}', '--local_addr=127.0.0.1']
    job = [str(WORKER), 'train', str(data), str(out), str(weights)]
    host = launch(common + ['--rdzv_conf=is_host=1'] + job, wait=False)
    rc1, log1, _ = launch(common + ['--rdzv_conf=is_host=0'] + job, timeout=300)
    rc0, log0, _ = finish(host, 300)
    assert rc0 == 0 and rc1 == 0, log0[-3000:] + log1[-3000:]
    r0, r1 = (dict(np.load(out / f'result_{r}.npz')) for r in (0, 1))
    for k, v in weights_of(reference).items():
        np.testing.assert_allclose(r0[k], v, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(r1[k], r0[k], err_msg=k)
    assert list(r1['written']) == [] and len(r0['written']) == 4


# --- one process: the hooks change nothing --------------------------------------------------
def test_outside_a_launcher_every_hook_is_the_identity(monkeypatch):
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k, raising=False)
    dl, model = torch.utils.data.DataLoader(list(range(10)), batch_size=4), nn.Linear(2, 2)
    assert not distributed.launched() and distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.is_main() and distributed.describe() is None
    assert distributed.shard_train(dl) is dl and distributed.shard_eval(dl) == (dl, False)
    assert distributed.wrap_model(model) is model
    assert distributed.mean_over_ranks(0.25, 8) == 0.25 and distributed.all_agree(False) is False
    a = np.arange(6).reshape(3, 2)
    assert distributed.gather_rows(a) is a and distributed.sum_over_ranks(a) is a
    assert distributed.main_only(lambda x: x + 1, 1) == 2


def test_launched_needs_the_launchers_environment_and_several_processes(monkeypatch):
    env = {'RANK': '0', 'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': '29500'}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.launched()
    monkeypatch.setenv('WORLD_SIZE', '1')
    assert not distributed.launched()  # `torchrun --nproc_per_node=1`: one process, as without
    monkeypatch.delenv('MASTER_PORT')
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert not distributed.launched()


def test_distributed_outside_a_launcher_says_how_to_launch(learn_on_cpu, monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    with pytest.raises(RuntimeError, match=r'torchrun --standalone --nproc_per_node=2 script\.py'):
        learn_on_cpu.distributed()


def test_a_bad_timeout_is_named(monkeypatch):
    monkeypatch.setenv('FASTLEARN_DIST_TIMEOUT', 'soon')
    with pytest.raises(ValueError, match=r"FASTLEARN_DIST_TIMEOUT must be a number of seconds > 0, got 'soon'"):
        distributed._timeout()
    monkeypatch.setenv('FASTLEARN_DIST_TIMEOUT', '30')
    assert distributed._timeout() == 30


def test_eval_shards_are_contiguous_and_cover_the_set_once():
    parts = [[i for b in _EvalShard(10, 3, r, 3) for i in b] for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [len(_EvalShard(10, 3, r, 3)) for r in range(3)] == [1, 1, 2]
    assert [list(_EvalShard(1, 4, r, 2)) for r in range(2)] == [[], [[0]]]


def test_train_shards_split_rank_0s_batches_and_drop_a_last_one_too_small(monkeypatch):
    batches = [[5, 2, 7, 0, 1, 3], [4, 9, 8, 6, 10, 11], [12, 13, 14]]
    monkeypatch.setattr(distributed.dist, 'broadcast_object_list', lambda box, src: box.__setitem__(0, batches))
    shards = [_TrainShard(iter(()), [6, 6, 3], r, 2) for r in range(2)]
    assert [len(s) for s in shards] == [2, 2]  # 3 items cannot give 2 processes 2 each
    assert [list(s) for s in shards] == [[[5, 2, 7], [4, 9, 8]], [[0, 1, 3], [6, 10, 11]]]


def test_batches_too_small_to_share_are_refused(monkeypatch):
    monkeypatch.setattr(distributed, '_active', lambda: True)
    monkeypatch.setattr(distributed.dist, 'get_world_size', lambda: 2)
    monkeypatch.setattr(distributed.dist, 'get_rank', lambda: 0)
    dl = torch.utils.data.DataLoader(list(range(12)), batch_size=3, shuffle=True)
    with pytest.raises(ValueError, match=r'batches of 3 cannot be shared by 2 processes: each needs at '
                                         r'least 2 items .* use bs of at least 4 or fewer processes'):
        distributed.shard_train(dl)
    shard = distributed.shard_train(torch.utils.data.DataLoader(list(range(12)), batch_size=5, shuffle=True))
    assert len(shard) == 2 and shard.batch_sampler.world == 2  # 5, 5, 2: the last is left out


def test_loaders_report_their_batch_sizes(get_data):
    from fastlearn.precompute import ArrayLoader
    data = get_data(bs=5)  # 24 train images: 4 of 5 and one of 4
    assert distributed._batch_sizes(data.trn_dl) == [5, 5, 5, 5, 4]
    assert distributed._batch_sizes(ArrayLoader(np.zeros((11, 2)), np.zeros(11), 5, shuffle=True)) == [5, 6]
    assert distributed._batch_sizes(ArrayLoader(np.zeros((11, 2)), np.zeros(11), 5)) == [5, 5, 1]
    sampler = torch.utils.data.DistributedSampler(data.trn_ds, num_replicas=2, rank=0)
    assert distributed._batch_sizes(torch.utils.data.DataLoader(data.trn_ds, 4, sampler=sampler)) is None


# --- mixed precision --------------------------------------------------------------------------
@pytest.fixture
def learn_on_cpu(get_data, get_learner):
    return get_learner(get_data())


def test_bf16_trains_on_the_cpu_and_keeps_weights_and_files_float32(learn_on_cpu, tmp_path):
    learn = learn_on_cpu.to_bf16()
    assert learn.precision.dtype == torch.bfloat16 and learn.precision.scaler is None
    assert 'mixed precision: bfloat16 autocast; weights float32' in repr(learn)
    before = learn.predict()
    vals = learn.fit(1e-2, 1)
    assert np.isfinite(vals).all()
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    saved = torch.load(learn.save('bf16'), weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in saved.values())
    assert learn.predict().dtype == np.float32 and before.shape == (8, 2)
    learn.to_fp32()
    assert learn.precision is FP32 and 'mixed precision' not in repr(learn)


def test_bf16_predictions_are_close_to_float32s(learn_on_cpu):
    fp32 = learn_on_cpu.predict()
    bf16 = learn_on_cpu.to_bf16().predict()
    assert np.abs(np.exp(fp32) - np.exp(bf16)).max() < 0.05 and not np.array_equal(fp32, bf16)


def test_bf16_activations_have_their_own_cache_stored_as_float32(get_data, get_learner):
    learn = get_learner(get_data(), precompute=True)
    fp32 = learn.activations('val')
    bf16 = learn.to_bf16().activations('val')
    files = sorted(learn.tmp_path.glob('x_act_val_*.npy'))
    assert len(files) == 1 and bf16.dtype == np.float32 and np.load(files[0]).dtype == np.float32
    assert not np.array_equal(fp32, bf16) and np.allclose(fp32, bf16, atol=0.1)


def test_fp16_off_cuda_warns_and_stays_float32(learn_on_cpu):
    with pytest.warns(UserWarning, match=r'to_fp16\(\): float16 mixed precision needs a CUDA GPU'):
        learn_on_cpu.half()
    assert learn_on_cpu.precision is FP32


def test_a_gradient_scaler_steps_with_true_scale_gradients():
    """The order on CUDA with float16: scaled backward, unscale, clip (on true gradients), step."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    plain = nn.Linear(3, 1)
    plain.load_state_dict(model.state_dict())
    p = Precision()
    p.scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    norms = []
    for m, prec in ((model, p), (plain, FP32)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        loss = nn.functional.mse_loss(m(x), y)
        prec.backward_step(loss, opt, lambda m=m: norms.append(float(m.weight.grad.norm())))
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)
    assert torch.allclose(model.weight, plain.weight, atol=1e-7)


def test_precision_names_its_settings():
    with pytest.raises(ValueError, match=r"precision is 'fp16', 'bf16' or 'fp32', got 'int8'"):
        from fastlearn.precision import mixed_precision
        mixed_precision('int8', torch.device('cpu'))
    assert Precision(torch.bfloat16).key() == 'autocast bfloat16' and FP32.key() == ''
