"""snapshot: check data/raw + the labels index and pin them in data/snapshot/manifest.json."""

from __future__ import annotations

import sys
from pathlib import Path

from cvrepro import tasks
from cvrepro.core.fileio import write_json
from cvrepro.core.paths import MANIFEST, RAW_DIR, SNAPSHOT_CHECKS
from cvrepro.dataset import duplicates
from cvrepro.dataset.images import default_workers
from cvrepro.dataset.index import annotations_file, ignore_index_of, invalid_mode
from cvrepro.dataset.listing import dvc_listing
from cvrepro.dataset.manifest import build_manifest


def run(params: dict, root: Path = Path(".")) -> dict:
    """Reads `task` and `dataset` (annotations, notes, ignore_index, invalid); raises CvreproError, nothing written,
    on a bad dataset."""
    root = Path(root)
    dup_cfg = duplicates.settings(params)  # a bad value fails before minutes of checking
    manifest = build_manifest(
        root / RAW_DIR,
        root / annotations_file(params),
        notes=(params.get("dataset") or {}).get("notes", "") or "",
        task=tasks.of_params(params),
        dvc_listing=dvc_listing(root),
        ignore_index=ignore_index_of(params),
        check_cache=root / SNAPSHOT_CHECKS,
        invalid=invalid_mode(params),
    )
    manifest["duplicates"] = duplicates.find_duplicates(
        manifest, root / RAW_DIR, root / annotations_file(params), tasks.of_params(params), dup_cfg,
        invalid_mode(params), cache_dir=(root / SNAPSHOT_CHECKS).parent, workers=default_workers())
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
