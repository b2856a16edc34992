"""snapshot: check data/raw + the labels index and pin them in data/snapshot/manifest.json."""

from __future__ import annotations

import sys
from pathlib import Path

from cvrepro import tasks
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import write_json
from cvrepro.core.paths import MANIFEST, RAW_DIR, SNAPSHOT_CHECKS
from cvrepro.dataset import duplicates
from cvrepro.dataset.images import default_workers
from cvrepro.dataset.index import annotations_file
from cvrepro.dataset.listing import dvc_listing
from cvrepro.dataset.manifest import build_manifest


def run(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Reads `task` and `dataset` (annotations, notes, ignore_index, invalid, duplicates); raises CvreproError,
    nothing written, on a bad dataset (a bad value in params fails in `typed`, before minutes of checking)."""
    cfg = typed(params)
    root = Path(root)
    task, index = tasks.of_params(cfg), root / annotations_file(cfg)
    manifest = build_manifest(
        root / RAW_DIR,
        index,
        notes=cfg.dataset.notes,
        task=task,
        dvc_listing=dvc_listing(root),
        ignore_index=cfg.dataset.ignore_index,
        check_cache=root / SNAPSHOT_CHECKS,
        invalid=cfg.dataset.invalid,
    )
    manifest["duplicates"] = duplicates.find_duplicates(
        manifest, root / RAW_DIR, index, task, cfg.dataset.duplicates, cfg.dataset.invalid,
        cache_dir=(root / SNAPSHOT_CHECKS).parent, workers=default_workers())
    write_json(root / MANIFEST, manifest)
    counts = manifest["duplicates"]["counts"]
    if counts["groups"]:
        print(f"snapshot: {counts['groups']} groups of duplicate images ({counts['images']} images, "
              f"{counts['exact_groups']} byte-identical), {counts['conflicts']} with conflicting labels; each is "
              f"listed in {MANIFEST} (duplicates.groups); split keeps each group in one split", file=sys.stderr)
    fixed = manifest["stats"].get("snapshot_invalid")
    if fixed and fixed["boxes"]:
        print(f"snapshot: dataset.invalid {fixed['mode']}: {fixed['dropped']} boxes dropped, {fixed['clipped']} "
              f"clipped; each is listed in {MANIFEST} (stats.snapshot_invalid.boxes)", file=sys.stderr)
    return manifest
