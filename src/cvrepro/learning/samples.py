"""The base of every task's train set (numpy only, so importing a task stays light)."""

from __future__ import annotations

import numpy as np


class SeededSamples:
    """The samples of a processed split for training: a task's train set subclasses it and
    defines __getitem__. `epoch` is set by make_loader; every random choice is a function of
    (seed, epoch, index), so the loader's worker count does not change the result."""

    def __init__(self, split, seed: int, hflip: float):
        self.split, self.seed, self.hflip, self.epoch = split, seed, hflip, 0

    def __len__(self) -> int:
        return len(self.split)

    def flipped(self, index: int) -> bool:
        """Whether sample `index` is flipped horizontally in this epoch."""
        return np.random.default_rng([self.seed, self.epoch, index]).random() < self.hflip
