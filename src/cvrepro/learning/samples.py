"""The base of every task's train set (numpy only, so importing a task stays light)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cvrepro.config.schema import Augment


class SeededSamples:
    """The samples of a processed split for training: a task's train set subclasses it and
    defines __getitem__. `epoch` is set by make_loader; every random choice is a function of
    (seed, epoch, index) (flip and `augment`), so the loader's worker count does not change the result."""

    augment_boxes = False  # a task whose targets hold boxes: an augmentation drops boxes a crop emptied

    def __init__(self, split, seed: int, hflip: float, augment: Augment | None = None):
        self.split, self.seed, self.hflip, self.epoch = split, seed, hflip, 0
        self.augment = None
        if augment is not None and len(split):
            from cvrepro.learning.augment import build  # torchvision: only when augmenting

            self.augment = build(augment, split.images.shape[-1], boxes=self.augment_boxes)

    def __len__(self) -> int:
        return len(self.split)

    def flipped(self, index: int) -> bool:
        """Whether sample `index` is flipped horizontally in this epoch."""
        return np.random.default_rng([self.seed, self.epoch, index]).random() < self.hflip

    def augmented(self, index: int, image, target: dict):
        """The `augment` transforms (learning/augment.py) applied to one sample, drawn from (seed, epoch, index)."""
        if self.augment is None:
            return image, target
        from cvrepro.learning.augment import apply

        return apply(self.augment, self.seed, self.epoch, index, image, target)
