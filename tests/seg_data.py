"""Generated segmentation folders in CamVid's layout: `images/<name>.png`, `labels/<name>_P.png`
(one class index per pixel), `valid.txt`. Each photo is noise with a red block (class 0,
'Sky'), a green block (1, 'Road') on a blue background (2, 'Car') and a Void (3) border of one
pixel, so a tiny U-Net can learn the masks in a few steps and metrics have Void to ignore."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CODES = ['Sky', 'Road', 'Car', 'Void']
COLOURS = np.array([(210, 40, 40), (40, 210, 40), (40, 40, 210), (128, 128, 128)], np.int16)


def seg_pair(rng: np.random.Generator, h: int, w: int) -> tuple[Image.Image, Image.Image]:
    mask = np.full((h, w), 2, np.uint8)
    for cls in (0, 1):
        bh, bw = rng.integers(h // 4, h // 2 + 1), rng.integers(w // 4, w // 2 + 1)
        r, c = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        mask[r:r + bh, c:c + bw] = cls
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = 3, 3, 3, 3
    noise = rng.integers(-50, 51, size=(h, w, 3), dtype=np.int16)
    photo = np.clip(COLOURS[mask] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(photo), Image.fromarray(mask)


def make_seg_folder(root: Path, n_train: int = 8, n_valid: int = 4, h: int = 30, w: int = 40,
                    seed: int = 0) -> Path:
    """Write the folder under `root` and return `root`."""
    rng = np.random.default_rng(seed)
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    names = [f'f{i:02d}' for i in range(n_train + n_valid)]
    for name in names:
        photo, mask = seg_pair(rng, h, w)
        photo.save(root / 'images' / f'{name}.png')
        mask.save(root / 'labels' / f'{name}_P.png')
    (root / 'valid.txt').write_text(''.join(f'{n}.png\n' for n in names[n_train:]))
    return root


def seg_data(root: Path, size: tuple[int, int] = (30, 40), bs: int = 4, aug_tfms=None):
    """The data block chain of lesson 3 on the folder at `root`."""
    from fastlearn.data_block import SegmentationItemList
    from fastlearn.transforms import CropType, imagenet_stats, tfms_from_stats
    tfms = tfms_from_stats(imagenet_stats, size, aug_tfms=aug_tfms, crop_type=CropType.NO)
    src = (SegmentationItemList.from_folder(root / 'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(lambda x: root / 'labels' / f'{x.stem}_P.png', classes=CODES))
    return src.transform(tfms, size=size, tfm_y=True).databunch(bs=bs, num_workers=0)
