"""A trained classifier as one file that predicts without the training data or any pickled code.

    learn.export('cats_dogs.pth')
    model = load_learner('cats_dogs.pth')
    model.predict_image('kitten.jpg')     # ('cats', 0.98)

The file is a safetensors file: the weights as tensors, and the plain values prediction needs
(architecture name, head shape, classes, size, normalisation stats, crop type) as JSON in its
header. Unlike a pickled learner, opening it cannot run code, by construction, and other tools
read it (`safetensors.safe_open(path, 'pt')`). Files of the first format (one dict saved with
`torch.save`, loaded with `weights_only=True`) still load.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .archs import arch_for, get_body
from .core import atomic_write, check_state_dict, default_device, is_safetensors, load_tensors, to_np
from .distributed import main_only
from .images import open_image
from .layers import create_head, num_features, pool_flatten
from .multilabel import as_thresholds, tags_above
from .transforms import CropType, tfms_from_stats
from .unet import build_unet

__all__ = ['export_learner', 'load_learner', 'Predictor']

FORMAT = 'fastlearn-export-2'  # safetensors, the plain values as JSON under the header key 'fastlearn'
FORMAT_TORCH = 'fastlearn-export-1'  # one dict through torch.save (read, no longer written)


def export_learner(learn: Any, fname: str | os.PathLike) -> Path:
    """Write what prediction needs (see the module docstring), atomically."""
    if learn.head_config is None:
        raise ValueError('export needs the standard head; with custom_head, save the weights with '
                         'learn.save(name) and rebuild the model to load them')
    tfms = learn.data.val_dl.dataset.transform
    if tfms is None:
        raise ValueError('export needs the validation transforms (the size and normalisation '
                         'prediction must repeat); build the data with tfms=tfms_from_model(...)')
    data = learn.data
    # regression data, and arrays given without classes, have no class names
    classes = [str(c) for c in data.classes] if data.classes is not None else []
    meta = {'format': FORMAT, 'arch': learn.arch_name, 'xtra_cut': learn.xtra_cut,
            'classes': classes, 'c': int(data.c),
            'is_multi': bool(data.is_multi), 'is_reg': bool(data.is_reg),
            'sz': list(tfms.sz) if isinstance(tfms.sz, tuple) else int(tfms.sz),  # (h, w) too
            'stats': [list(map(float, s)) for s in tfms.stats],
            'crop_type': int(tfms.crop_type), **learn.head_config,
            # multi-label: the tuned per-tag thresholds travel with the weights they were tuned for
            'thresholds': None if learn.thresholds is None else learn.thresholds.tolist(),
            'state_dict': {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}}
    return main_only(_write, meta, Path(fname))  # one writer however many processes train


def _write(meta: dict, path: Path) -> Path:
    _check_rebuilds(meta, path)
    values = {k: v for k, v in meta.items() if k != 'state_dict'}
    # clone: safetensors refuses tensors that share storage (views of one buffer)
    blob = safetensors_bytes({k: v.clone() for k, v in meta['state_dict'].items()},
                             metadata={'format': FORMAT, 'fastlearn': json.dumps(values)})
    with atomic_write(path) as f:
        f.write(blob)
    return path


def _read(path: Path) -> Any:
    """The export's plain values with its `state_dict`, from either format; errors name the file."""
    with open(path, 'rb') as f:
        head = f.read(9)
    fix = 'write it again with learn.export(fname), or restore it from a backup'
    if not head:
        raise ValueError(f'{path} is empty (0 bytes): an export that never completed or a truncated '
                         f'copy; {fix}')
    # safetensors first: its first byte is the header length's lowest, which can be 0x80 or 'P'
    safetensors = is_safetensors(path)
    if not safetensors and (head.startswith(b'PK') or head[:1] == b'\x80'):
        meta = load_tensors(path, written_by='learn.export(fname)')  # torch's zip or pickle: format 1
        return meta if isinstance(meta, dict) and meta.get('format') == FORMAT_TORCH else None
    if not safetensors:
        raise ValueError(f'{path} is not a safetensors or PyTorch file (its first bytes are neither): '
                         f'perhaps another format or a renamed file; {fix}')
    try:
        with safe_open(str(path), framework='pt') as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f'{path} is truncated or damaged ({type(e).__name__}: '
                         f'{str(e).splitlines()[0][:120]}); {fix}') from None
    if header.get('format') != FORMAT:
        return None
    try:
        values = json.loads(header.get('fastlearn', ''))
    except json.JSONDecodeError:
        raise ValueError(f'{path} is a damaged or altered export: its header values are not JSON; '
                         'export the learner again') from None
    return {**values, 'state_dict': state} if isinstance(values, dict) else None


def _check_rebuilds(meta: dict, path: Path) -> None:
    """Refuse to write an export that `load_learner` could not open: it rebuilds the model from
    the architecture's name, so a user module must be registered under that name."""
    try:
        check_state_dict(_build(meta), meta['state_dict'], path)
    except Exception as e:  # noqa: BLE001 - unknown name, missing timm, another cut, ...
        name = meta['arch']
        raise ValueError(
            f'cannot export to {path}: load_learner rebuilds the model from its architecture name '
            f'{name!r}, and that name does not rebuild this model ({str(e).splitlines()[0][:300]}). '
            f'Register the architecture first, e.g. register_arch(Arch({name!r}, MyNet, cut=...)) '
            f'from fastlearn.archs, build the learner with ConvLearner.pretrained({name!r}, data), '
            'and call the same register_arch before load_learner; or keep the weights with '
            'learn.save(name)') from None


def _check_meta(meta: dict, path: Path) -> None:
    """The plain values an export must hold, consistent with each other (the weights are
    checked against the rebuilt model afterwards)."""
    kinds: dict[str, Any] = {'arch': str, 'xtra_cut': int, 'classes': list, 'c': int, 'is_multi': bool,
             'is_reg': bool, 'sz': (int, list), 'crop_type': int, 'stats': list, 'state_dict': dict}
    bad = [k for k, t in kinds.items() if not isinstance(meta.get(k), t)]
    if bad or 'ps' not in meta or 'xtra_fc' not in meta:
        raise ValueError(f'{path} is a damaged or altered export: field(s) {bad or ["ps", "xtra_fc"]} '
                         'are missing or of the wrong type; export the learner again')
    if meta.get('kind', 'classifier') not in ('classifier', 'unet'):
        raise ValueError(f"{path} is a damaged or altered export: kind {meta.get('kind')!r} is "
                         "neither 'classifier' nor 'unet'; export the learner again")
    if meta['classes'] and len(meta['classes']) != meta['c']:
        raise ValueError(f"{path} is a damaged or altered export: it lists {len(meta['classes'])} "
                         f"classes but predicts {meta['c']} outputs; export the learner again")
    if meta.get('thresholds') is not None:
        try:
            if not meta['is_multi']:
                raise ValueError('set on a model without tags')
            as_thresholds(meta['thresholds'], meta['c'])
        except (ValueError, TypeError) as e:
            raise ValueError(f'{path} is a damaged or altered export: its thresholds ({e}); export '
                             'the learner again') from None
    try:
        CropType(meta['crop_type'])
    except ValueError:
        raise ValueError(f"{path} is a damaged or altered export: crop_type {meta['crop_type']} is "
                         'not a CropType; export the learner again') from None


def _build(meta: dict) -> nn.Module:
    arch = arch_for(meta['arch'])
    if meta.get('kind') == 'unet':  # a segmentation learner's DynamicUnet (unet_learner)
        return build_unet(arch, meta['c'], pretrained=False)
    body = get_body(arch, pretrained=False, xtra_cut=meta['xtra_cut'])
    head = create_head(2 * num_features(body), meta['c'], ps=meta['ps'], xtra_fc=meta['xtra_fc'],
                       is_multi=meta['is_multi'], is_reg=meta['is_reg'])
    return nn.Sequential(OrderedDict(body=body, pool=pool_flatten(), head=head))


def load_learner(fname: str | os.PathLike, *, device: torch.device | str | None = None) -> 'Predictor':
    """Load a file written by `learn.export(fname)` for prediction (tensors only: nothing is
    unpickled, so a file from anywhere is safe to open)."""
    path = Path(fname)
    if not path.is_file():
        raise FileNotFoundError(f'no exported model at {path}; write one with learn.export({str(path)!r})')
    meta = _read(path)
    if meta is None:
        raise ValueError(f'{path} is not a fastlearn export (no {FORMAT!r} marker); files from '
                         'learn.save() hold weights only: load those with learn.load(name)')
    _check_meta(meta, path)
    try:
        model = _build(meta)
    except Exception as e:  # noqa: BLE001 - an unknown name, or a head that cannot be built
        raise ValueError(f"{path} needs the architecture {meta['arch']!r}, which cannot be built "
                         f"here ({str(e).splitlines()[0][:300]}); if it is your own module, call "
                         'register_arch(Arch(...)) under that name before load_learner') from None
    check_state_dict(model, meta['state_dict'], path,
                     fix='the export was altered or damaged: export the learner again')
    model.load_state_dict(meta['state_dict'])
    return Predictor(model, meta, device=device)


class Predictor:
    """An exported classifier: `predict_image(file)` gives `(class, probability)`."""

    def __init__(self, model: nn.Module, meta: dict, *, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device else default_device()
        self.model = model.to(self.device).eval()
        self.classes: list[str] = meta['classes']
        self.c = int(meta['c'])
        self.is_multi, self.is_reg = meta['is_multi'], meta['is_reg']
        self.is_unet = meta.get('kind') == 'unet'
        th = meta.get('thresholds')  # absent from exports written before thresholds were kept
        self.thresholds: np.ndarray | None = None if th is None else as_thresholds(th, self.c)
        self.arch = meta['arch']
        sz = tuple(meta['sz']) if isinstance(meta['sz'], list) else meta['sz']
        _, self.tfms = tfms_from_stats((tuple(meta['stats'][0]), tuple(meta['stats'][1])), sz,
                                       crop_type=CropType(meta['crop_type']))

    def __repr__(self) -> str:
        return f'Predictor({self.arch}, sz {self.tfms.sz}, classes {self.classes})'

    @torch.inference_mode()
    def predict(self, images: Sequence[Any], bs: int = 32) -> np.ndarray:
        """Probabilities, `(N, C)`, for image files or PIL images (regression: raw outputs)."""
        out = []
        for i in range(0, len(images), bs):
            ims = [im if hasattr(im, 'convert') else open_image(im, self.tfms.draft_size)
                   for im in images[i:i + bs]]
            x = torch.stack([self.tfms(im.convert('RGB')) for im in ims]).to(self.device)
            logits = self.model(x)
            # the class axis is 1: (N, C) for classes, (N, C, H, W) for a U-Net's masks
            out.append(to_np(logits if self.is_reg else
                             torch.sigmoid(logits) if self.is_multi else F.softmax(logits, dim=1)))
        return np.concatenate(out) if out else np.zeros((0, self.c), np.float32)

    def predict_mask(self, image: Any) -> np.ndarray:
        """A U-Net's mask for one image: class indices (H, W) at the export's size.

            model.predict_mask('street.jpg')   # model.classes[mask[0, 0]] == 'Sky'
        """
        if not self.is_unet:
            raise ValueError('predict_mask needs an exported U-Net (unet_learner); this model '
                             'predicts one class per image: use predict_image')
        return self.predict([image])[0].argmax(0)

    def predict_tags(self, image: Any) -> tuple[list[str], np.ndarray]:
        """A multi-label model's tags for one image, over the thresholds exported with it
        (`learn.thresholds`; 0.5 where none were set), and the probability of every tag.

            model.predict_tags('street.jpg')   # (['Car', 'Road', 'Sky'], array([...]))
        """
        if not self.is_multi:
            raise ValueError('predict_tags needs a multi-label model (tags); this one predicts '
                             + ('a class per pixel: use predict_mask' if self.is_unet else
                                'numbers: use predict' if self.is_reg else 'one class: use predict_image'))
        probs = self.predict([image])[0]
        return tags_above(probs, self.classes, 0.5 if self.thresholds is None else self.thresholds)[0], probs

    def predict_image(self, image: Any) -> tuple[str, float]:
        """The most likely class of one image and its probability.

            model.predict_image('kitten.jpg')     # ('cats', 0.98)
        """
        if self.is_unet:
            raise ValueError('this is an exported U-Net: it predicts a class per pixel; use '
                             'model.predict_mask(image)')
        if self.is_reg or not self.classes:
            raise ValueError('predict_image names a class, and this model has none (regression or '
                             'no class names); use model.predict([image]) for its raw outputs')
        probs = self.predict([image])[0]
        i = int(probs.argmax())
        return self.classes[i], float(probs[i])
