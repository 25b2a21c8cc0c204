"""Training-loader throughput: fastlearn's `trn_dl` against a plain torchvision pipeline.

    .venv/bin/python bench/data_pipeline.py [--data ../shared/data/dogscats] [--sizes 128 224]
        [--camvid ../shared/data/camvid] [--what classes masks]

Both sides make one shuffled pass over the training images (decode, augment, collate) with the
same batch size and worker count, doing the same augmentation: the course's side-on preset with
max_zoom=1.1 (shorter side to sz x U(1, 1.1) with p=0.75, rotate +-10 deg with p=0.75, lighting
0.05/0.05, horizontal flip, random sz x sz crop, ImageNet normalisation). The plain side is what a
user writes without fastlearn: `ImageFolder` (PIL loader) with transforms v2 on PIL images.

Each timed pass builds a fresh loader, so both sides pay for scanning the folder and starting
their workers. Runs alternate between the sides and the best of `--repeats` is kept. Two figures:
images/s of wall time (what an epoch feels like) and CPU milliseconds per image summed over the
main process and its workers (what it costs; far less disturbed when other jobs share the cores).
The machine is shared and noisy: compare the ratios, not the seconds.

Masks (`--what masks`): CamVid's 367 training photos with their masks at 360x480 and half size,
through `SegmentationItemList` (`tfm_y=True`) against a plain torchvision pipeline doing the same
work: PIL decode of photo and mask, resize to cover (x U(1, 1.1) with p=0.75), rotation +-10 deg
with p=0.75 (the mask nearest-neighbour, filled with Void), lighting, flip, random crop, the mask
to int64, the photo normalised.
"""
from __future__ import annotations

import argparse
import gc
import resource
import time
import types
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from fastlearn.core import default_num_workers
from fastlearn.dataset import ImageClassifierData
from fastlearn.transforms import imagenet_stats, tfms_from_model, transforms_side_on

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'dogscats'
DEFAULT_CAMVID = DEFAULT_DATA.parent / 'camvid'
VOID = 11
MAX_ZOOM = 1.1


def fastlearn_loader(path: Path, sz: int, bs: int, workers: int) -> DataLoader:
    stats_only = types.SimpleNamespace(stats=imagenet_stats)  # no model needed for the stats
    tfms = tfms_from_model(stats_only, sz, aug_tfms=transforms_side_on, max_zoom=MAX_ZOOM)
    return ImageClassifierData.from_paths(path, bs=bs, tfms=tfms, num_workers=workers).trn_dl


def plain_loader(path: Path, sz: int, bs: int, workers: int) -> DataLoader:
    bilinear = v2.InterpolationMode.BILINEAR
    tfm = v2.Compose([
        v2.RandomChoice([v2.RandomResize(sz, int(sz * MAX_ZOOM) + 1, interpolation=bilinear),
                         v2.Resize(sz, interpolation=bilinear)], p=[0.75, 0.25]),
        v2.RandomApply([v2.RandomRotation(10, interpolation=bilinear)], p=0.75),
        v2.ColorJitter(brightness=0.05, contrast=0.05),
        v2.RandomHorizontalFlip(),
        v2.RandomCrop(sz),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(*imagenet_stats),
    ])
    ds = datasets.ImageFolder(str(path / 'train'), transform=tfm)
    return DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers,
                      persistent_workers=False)


def fastlearn_masks_loader(path: Path, size: tuple[int, int], bs: int, workers: int) -> DataLoader:
    from fastlearn.data_block import SegmentationItemList
    tfms = tfms_from_model(types.SimpleNamespace(stats=imagenet_stats), size,
                           aug_tfms=transforms_side_on, max_zoom=MAX_ZOOM)
    codes = (path / 'codes.txt').read_text().split()
    src = (SegmentationItemList.from_folder(path / 'images')
           .split_by_fname_file('../valid.txt')
           .label_from_func(lambda x: path / 'labels' / f'{x.stem}_P.png', classes=codes))
    return src.transform(tfms, tfm_y=True).databunch(bs=bs, num_workers=workers).trn_dl


class _PlainMasks(torch.utils.data.Dataset):
    def __init__(self, path: Path, tfm):
        valid = set((path / 'valid.txt').read_text().split())
        self.names = sorted(p.name for p in (path / 'images').glob('*.jpg') if p.name not in valid)
        self.path, self.tfm = path, tfm

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        from PIL import Image
        from torchvision import tv_tensors
        name = self.names[i]
        im = Image.open(self.path / 'images' / name).convert('RGB')
        mask = tv_tensors.Mask(torch.from_numpy(
            __import__('numpy').array(Image.open(self.path / 'labels' / f'{name[:-4]}_P.png'))))
        return self.tfm(im, mask)


def plain_masks_loader(path: Path, size: tuple[int, int], bs: int, workers: int) -> DataLoader:
    from torchvision import tv_tensors
    bilinear = v2.InterpolationMode.BILINEAR
    h = size[0]
    tfm = v2.Compose([
        v2.RandomChoice([v2.RandomResize(h, int(h * MAX_ZOOM) + 1, interpolation=bilinear),
                         v2.Resize(h, interpolation=bilinear)], p=[0.75, 0.25]),
        v2.RandomApply([v2.RandomRotation(10, interpolation=bilinear,
                                          fill={tv_tensors.Mask: VOID, 'others': 0})], p=0.75),
        v2.ColorJitter(brightness=0.05, contrast=0.05),
        v2.RandomHorizontalFlip(),
        v2.RandomCrop(size),
        v2.ToImage(), v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64,
                                  'others': None}, scale=True),
        v2.Normalize(*imagenet_stats),
    ])
    return DataLoader(_PlainMasks(path, tfm), batch_size=bs, shuffle=True, num_workers=workers,
                      persistent_workers=False)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished (reaped) children: the loader workers."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_pass(make, *args) -> tuple[float, float, int, tuple]:
    """Wall and CPU seconds for a full pass over a freshly built loader, the images seen, and
    the batch shape. The loader is dropped at the end so its workers exit and are counted."""
    gc.collect()
    t, cpu = time.perf_counter(), _cpu_seconds()
    n, shape, dl = 0, None, make(*args)
    for x, _ in dl:
        n, shape = n + len(x), shape or tuple(x.shape)
    wall = time.perf_counter() - t
    del dl, x
    gc.collect()
    return wall, _cpu_seconds() - cpu, n, shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DEFAULT_DATA, help='folder with train/<class>/')
    ap.add_argument('--sizes', type=int, nargs='+', default=[128, 224])
    ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--workers', type=int, default=default_num_workers())
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--camvid', type=Path, default=DEFAULT_CAMVID, help='CamVid, for the masks')
    ap.add_argument('--what', nargs='+', choices=['classes', 'masks'],
                    default=['classes', 'masks'])
    args = ap.parse_args()
    print(f"data {args.data}, bs {args.bs}, workers {args.workers}, best of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if 'classes' in args.what:
        for sz in args.sizes:
            compare(f'sz {sz}', (fastlearn_loader, plain_loader), args.data, sz, args, (sz, sz))
    if 'masks' in args.what:
        for size in ((360, 480), (180, 240)):
            compare(f'masks {size[0]}x{size[1]}', (fastlearn_masks_loader, plain_masks_loader),
                    args.camvid, size, args, size)


def compare(label: str, makers, path: Path, size, args, hw: tuple[int, int]) -> None:
    rate, cost = {}, {}
    for _ in range(args.repeats):
        for name, make in zip(('fastlearn', 'plain'), makers):
            wall, cpu, n, shape = one_pass(make, path, size, args.bs, args.workers)
            assert shape[1:] == (3, *hw), shape
            rate[name] = max(rate.get(name, 0.0), n / wall)
            cost[name] = min(cost.get(name, float('inf')), 1e3 * cpu / n)
    print(f"{label}: fastlearn {rate['fastlearn']:6.1f} images/s, {cost['fastlearn']:.2f} CPU ms/image"
          f" | plain torchvision {rate['plain']:6.1f} images/s, {cost['plain']:.2f} CPU ms/image"
          f" | ratio {rate['fastlearn'] / rate['plain']:.2f}x wall, "
          f"{cost['plain'] / cost['fastlearn']:.2f}x CPU")


if __name__ == '__main__':
    main()
