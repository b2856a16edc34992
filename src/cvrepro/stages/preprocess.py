"""preprocess: resize every image once into per-split arrays (data/processed/)."""

from __future__ import annotations

from pathlib import Path

from cvrepro import tasks
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json
from cvrepro.core.paths import MANIFEST, SPLITS
from cvrepro.dataset.processed import write_processed


def run(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Reads `preprocess` (and `dataset.annotations` for the boxes of detection); the task comes from the manifest."""
    cfg = typed(params)
    root = Path(root)
    manifest = read_json(root / MANIFEST)
    task = tasks.of_record(manifest, str(MANIFEST))
    return write_processed(task, manifest, read_json(root / SPLITS), cfg, root)
