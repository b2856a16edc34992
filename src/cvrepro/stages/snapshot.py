"""snapshot: check data/raw + the labels index and pin them in data/snapshot/manifest.json."""

from __future__ import annotations

from pathlib import Path

from cvrepro import tasks
from cvrepro.core.fileio import write_json
from cvrepro.core.paths import MANIFEST, RAW_DIR, SNAPSHOT_CHECKS
from cvrepro.dataset.index import annotations_file, ignore_index_of
from cvrepro.dataset.listing import dvc_listing
from cvrepro.dataset.manifest import build_manifest


def run(params: dict, root: Path = Path(".")) -> dict:
    """Reads `task` and `dataset` (annotations, notes, ignore_index); raises CvreproError, nothing written,
    on a bad dataset."""
    root = Path(root)
    manifest = build_manifest(
        root / RAW_DIR,
        root / annotations_file(params),
        notes=(params.get("dataset") or {}).get("notes", "") or "",
        task=tasks.of_params(params),
        dvc_listing=dvc_listing(root),
        ignore_index=ignore_index_of(params),
        check_cache=root / SNAPSHOT_CHECKS,
    )
    write_json(root / MANIFEST, manifest)
    return manifest
