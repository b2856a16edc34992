"""Augmentation from `augment` of params.yaml (the `conf/augment/` group, typed: `schema.Augment`), built on
torchvision's transforms.v2, which moves boxes and masks with the pixels.

What it adds to the seeded horizontal flip of `train.hflip`: random resized crops (scale
jitter), vertical flips, colour jitter. Every sample's randomness is a function of
(seed, epoch, index) alone: torch's generator is seeded from those three around each
sample's transform and restored afterwards, so the loader's worker count, the order of
batches and anything else that draws random numbers leave the bits unchanged.

The default option (`augment: none`) builds nothing: training is bit for bit what it was
before this module existed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

from cvrepro.core.fileio import CvreproError

if TYPE_CHECKING:
    from cvrepro.config.schema import Augment


def build(augment: Augment | None, size: int, boxes: bool = False):
    """The transforms.v2 pipeline of the typed `augment` section for square `size` images, or None when it
    does nothing (the schema already refused unknown keys and values out of range).

    scale [lo, hi] (area fraction of a random resized crop, back to size x size), ratio [lo, hi]
    (its aspect ratio), vflip (probability), color {brightness, contrast, saturation, hue} (ColorJitter).
    boxes: drop boxes a crop left with no area (their labels too)."""
    if augment is None:
        return None
    from torchvision.transforms import v2

    ops = []
    if augment.scale:
        lo, hi = augment.scale
        ratio = tuple(augment.ratio or (3 / 4, 4 / 3))
        if not lo <= hi:
            raise CvreproError(f"params.yaml: augment.scale must be [lo, hi] with 0 < lo <= hi <= 1, "
                               f"got {augment.scale}")
        ops.append(v2.RandomResizedCrop(size, scale=(lo, hi), ratio=ratio, antialias=True))
    if augment.vflip:
        ops.append(v2.RandomVerticalFlip(augment.vflip))
    color = dataclasses.asdict(augment.color) if augment.color else {}
    if any(color.values()):
        ops.append(v2.ColorJitter(**{k: v for k, v in color.items() if v}))
    if not ops:
        return None
    if boxes:
        ops.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(ops)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch (a stream apart from the flip's draw)."""
    return int(np.random.default_rng([seed, epoch, index, 1]).integers(2**62))


def apply(transform, seed: int, epoch: int, index: int, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """`transform` on one sample: image float [3,S,S] in [0,1]; target {boxes xyxy, labels} or {mask} or
    {label}. Boxes and masks are wrapped as tv_tensors so v2 moves them with the pixels."""
    from torchvision import tv_tensors

    wrapped = dict(target)
    if "boxes" in wrapped:
        wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=image.shape[-2:])
    if "mask" in wrapped:
        wrapped["mask"] = tv_tensors.Mask(target["mask"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(seed, epoch, index))
        out_image, out = transform(tv_tensors.Image(image), wrapped)
    out = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out_image.as_subclass(torch.Tensor).contiguous(), out
