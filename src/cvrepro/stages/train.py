"""train: the preflight checks, then fit the model of params.yaml on the processed train split (models/)."""

from __future__ import annotations

from pathlib import Path

from cvrepro.learning.trainer import train
from cvrepro.provenance.preflight import for_training


def run(params: dict, root: Path = Path(".")) -> dict:
    """Reads `task`, `model`, `train`, `preprocess` (the predictor spec), `dataset.ignore_index`, `split.seed`."""
    root = Path(root)
    checks = for_training(params, root)  # strict: refuses here, before any work; warn: recorded in train.json
    return train(params, root, preflight=checks)
