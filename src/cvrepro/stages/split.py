"""split: assign every image of the manifest to train/val/test by a seeded hash (data/splits/splits.json)."""

from __future__ import annotations

from pathlib import Path

from cvrepro import tasks
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json, write_json
from cvrepro.core.paths import MANIFEST, SPLITS
from cvrepro.dataset.splits import read_previous, split_record


def run(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Reads `split`; the task comes from the manifest."""
    cfg = typed(params)
    root = Path(root)
    manifest = read_json(root / MANIFEST)
    previous = read_previous(root / SPLITS)  # splits.json is `persist` in dvc.yaml: the last split, if any
    result = split_record(manifest, cfg.split, tasks.of_record(manifest, str(MANIFEST)), previous)
    write_json(root / SPLITS, result)
    return result
