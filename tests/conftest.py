"""Shared fixtures: a seeded, offline, 2-thread world with small generated image folders."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault('MPLBACKEND', 'Agg')

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
DOGSCATS = SHARED / 'data' / 'dogscats'
CAMVID = SHARED / 'data' / 'camvid'

# One colour per class, far apart, so a tiny model can learn them in a few steps.
CLASS_COLOURS = {'ants': (200, 40, 40), 'bees': (40, 200, 40), 'cats': (40, 40, 200),
                 'dogs': (200, 200, 40)}


def noise_image(colour, sz: int = 32, rng: np.random.Generator | None = None) -> Image.Image:
    """A `sz`x`sz` RGB image: the class colour plus uniform noise."""
    rng = rng or np.random.default_rng(0)
    base = np.array(colour, dtype=np.int16)
    noise = rng.integers(-60, 61, size=(sz, sz, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, classes=('ants', 'bees'), n_train: int = 12, n_valid: int = 4,
                      sz: int = 32, n_test: int = 0, seed: int = 0, ext: str = '.png') -> Path:
    """Write `root/{train,valid}/<class>/<i>.png` (and a flat `root/test/`) and return root."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('valid', n_valid)):
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise_image(CLASS_COLOURS[cls], sz, rng).save(d / f'{cls}_{i:03d}{ext}')
    if n_test:
        d = root / 'test'
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_test):
            cls = classes[i % len(classes)]
            noise_image(CLASS_COLOURS[cls], sz, rng).save(d / f'{i:03d}{ext}')
    return root


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    import random
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope='session')
def _offline_world(tmp_path_factory):
    """No test may touch the network, and none may find weights cached by an earlier run."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.environ['TORCH_HOME'] = str(tmp_path_factory.mktemp('torch_home'))
    os.environ['HF_HUB_OFFLINE'] = '1'

    real_connect = socket.socket.connect

    def connect(sock, address):
        # Unix sockets stay open: loader workers hand their batches back through them.
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise OSError(f'network access is disabled in the test suite (tried {address!r})')

    def refuse(*args, **kwargs):
        raise OSError('network access is disabled in the test suite')

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, 'connect', connect)
    mp.setattr(socket, 'create_connection', refuse)
    yield
    mp.undo()


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two classes of coloured 32x32 noise images: 12 train and 4 valid per class, 3 test."""
    return make_image_folder(tmp_path / 'imgs', n_test=3)


@pytest.fixture
def dogscats() -> Path:
    """The shared real photos (read-only); tests that use them are marked slow."""
    if not DOGSCATS.is_dir():
        pytest.skip(f'{DOGSCATS} is not present')
    return DOGSCATS


# ---- the tiny architecture (tests/tiny.py) ------------------------------------------------------

@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory) -> Path:
    """Path to TinyNet "pretrained" weights: a state dict made with a fixed seed."""
    from tiny import save_tiny_weights
    return save_tiny_weights(tmp_path_factory.mktemp('tiny_weights') / 'tiny.pth')


@pytest.fixture(scope='session')
def tiny_arch(tiny_weights):
    """The 'tiny' Arch (cut 3, split 1, ImageNet stats, nf 64) with `tiny_weights` as its
    pretrained weights, registered so the name 'tiny' works too."""
    from fastlearn.archs import ARCHS, register_arch
    from tiny import tiny_arch_with
    arch = register_arch(tiny_arch_with(tiny_weights), replace=True)
    yield arch
    ARCHS.pop('tiny', None)


@pytest.fixture
def tiny_learner(image_folder, tiny_arch):
    """`ConvLearner.pretrained(tiny_arch, ...)` on `image_folder` at 32 px, bs 8, on the CPU, quiet,
    on one torch thread (these learners are small enough that a second thread only waits)."""
    import warnings

    from fastlearn.conv_learner import ConvLearner, ImageClassifierData, tfms_from_model
    torch.set_num_threads(1)
    data = ImageClassifierData.from_paths(image_folder, bs=8, tfms=tfms_from_model(tiny_arch, 32),
                                          num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return ConvLearner.pretrained(tiny_arch, data, device='cpu', quiet=True)
