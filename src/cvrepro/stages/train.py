"""train: the preflight checks, then fit the model of params.yaml on the processed train split (models/)."""

from __future__ import annotations

from pathlib import Path

from cvrepro.config.typed import ParamsLike, typed
from cvrepro.learning.trainer import train
from cvrepro.provenance.preflight import for_training


def run(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Reads `task`, `model`, `train`, `preprocess` (the predictor spec), `dataset.ignore_index`, `split.seed`."""
    root = Path(root)
    cfg = typed(params)
    # strict: refuses here, before any work; warn: recorded in train.json
    checks = for_training(cfg, root)
    return train(cfg, root, preflight=checks)
