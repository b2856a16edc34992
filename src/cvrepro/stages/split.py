"""split: assign every image of the manifest to train/val/test by a seeded hash.

An image's split depends only on (seed, its identity): its path, or the value of
`group_key` so that a whole group (video, store, patient) lands in one split.
Adding images therefore never moves an existing image to another split.

Stratification: an exact per-class stratified split would have to move images when
new ones arrive (it ranks the images of a class), which the rule above forbids. So
every task keeps the per-image hash, which is stratified in expectation: each class's
images fall into the splits by the same independent uniform draws, so a class of n
images gets n x ratio +- sqrt(n x ratio x (1 - ratio)) of them in each split. For
classification the output records the images per class in every split
(`class_counts`) and warns when a class is missing from a split that should hold images.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path

from ..io import CvreproError, read_json, write_json
from ..paths import MANIFEST, SPLITS

SPLIT_NAMES = ("train", "val", "test")


def unit_interval(seed: int, identity: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, identity)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(manifest: dict, seed: int, ratios: dict[str, float], group_key: str | None) -> dict[str, list[str]]:
    missing = [n for n in SPLIT_NAMES if n not in ratios]
    if missing or any(ratios[n] < 0 for n in SPLIT_NAMES) or abs(sum(ratios[n] for n in SPLIT_NAMES) - 1) > 1e-6:
        raise CvreproError(f"params.yaml: split.ratios must give train, val and test, each >= 0, summing to 1; got {ratios}")
    bounds = (ratios["train"], ratios["train"] + ratios["val"])
    members: dict[str, list[str]] = {n: [] for n in SPLIT_NAMES}
    for f in manifest["files"]:
        identity = f["path"]
        if group_key:
            value = f.get("attributes", {}).get(group_key)
            if value is None:
                raise CvreproError(
                    f"{MANIFEST}: image {f['path']} (id {f['image_id']}) has no attribute "
                    f"'{group_key}' named by split.group_key"
                )
            identity = f"group:{value}"
        u = unit_interval(seed, identity)
        name = "train" if u < bounds[0] else "val" if u < bounds[1] else "test"
        members[name].append(f["path"])
    return {n: sorted(v) for n, v in members.items()}


def run(params: dict, root: Path = Path(".")) -> dict:
    cfg = params["split"]
    if cfg.get("method", "sha256") != "sha256":
        raise CvreproError(f"params.yaml: split.method '{cfg['method']}' is unknown (supported: sha256)")
    manifest = read_json(root / MANIFEST)
    members = assign(manifest, int(cfg["seed"]), cfg["ratios"], cfg.get("group_key"))
    result = {
        "method": "sha256",
        "rule": "u = int(sha256(f'{seed}:{identity}')[:8 bytes]) / 2**64; train if u < r_train, "
        "val if u < r_train + r_val, else test; identity = image path or 'group:<value>'",
        "seed": int(cfg["seed"]),
        "ratios": cfg["ratios"],
        "group_key": cfg.get("group_key"),
        "snapshot_id": manifest["snapshot_id"],
        "counts": {n: len(v) for n, v in members.items()},
        "splits": members,
    }
    if manifest.get("task") == "classification":
        result["class_counts"] = class_counts(manifest, members)
        for name, counts in result["class_counts"].items():
            empty = [c for c, n in counts.items() if n == 0]
            if empty and cfg["ratios"][name] > 0:
                print(f"warning: split {name} holds no image of class {', '.join(empty)}", file=sys.stderr)
    write_json(root / SPLITS, result)
    return result


def class_counts(manifest: dict, members: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Images per class name in each split (classification manifests carry each image's category_id)."""
    class_of = {f["path"]: manifest["class_map"][str(f["category_id"])] for f in manifest["files"]}
    out = {}
    for name, paths in members.items():
        counts = Counter({c: 0 for c in manifest["class_map"].values()})
        counts.update(class_of[p] for p in paths)
        out[name] = dict(counts)
    return out
