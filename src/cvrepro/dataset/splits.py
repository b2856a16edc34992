"""Splits: assign every image of the manifest to train/val/test by a seeded hash.

An image's split depends only on (seed, its identity): its path, or the value of
`group_key` so that a whole group (video, store, patient) lands in one split.
Adding images therefore never moves an existing image to another split.

`split.method: subset` honours the split a source came with (the `subset` attribute
the importers record, e.g. an official test set): test and val subsets are kept, a train
subset is divided into train and val by the same hash when the source has no val; images
with no or another subset (`default`) are assigned by the hash.

Stratification: an exact per-class stratified split would have to move images when
new ones arrive (it ranks the images of a class), which the rule above forbids. So
every task keeps the per-image hash, which is stratified in expectation: each class's
images fall into the splits by the same independent uniform draws, so a class of n
images gets n x ratio +- sqrt(n x ratio x (1 - ratio)) of them in each split. For
classification the output records the images per class in every split
(`class_counts`) and warns when a class is missing from a split that should hold images.

Duplicates (the manifest's `duplicates` groups, dataset/duplicates.py) are kept in one split, with every
`group_key` group a member belongs to, and an image assigned by the last split made with the same settings
(the previous splits.json, which dvc.yaml keeps with `persist`) keeps its split: a group follows its
earliest-assigned member, so a new copy of a released image joins the released image's split. Only free
images move: a released image, or under `subset` an image of a source subset, keeps its split even when that
leaves a group apart (recorded `"apart": true`; `cvrepro check` reports the leak, a strict release refuses it).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cvrepro.config.params import SPLIT_METHOD
from cvrepro.config.schema import Split
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.duplicates import keep_together, split_of_path
from cvrepro.core.paths import MANIFEST

SPLIT_NAMES = ("train", "val", "test")
SUBSET_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}  # a source's subset attribute -> our split


def _subset_split(f: dict, has_val: bool) -> str | None:
    """`split.method: subset`: the split the source's subset names (an official test set stays the test set);
    None where the hash decides. A train subset is divided into train/val by the hash if the source has no val."""
    name = SUBSET_NAMES.get(str(f.get("attributes", {}).get("subset", "")).lower())
    return None if name is None or (name == "train" and not has_val) else name


def unit_interval(seed: int, identity: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, identity)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(manifest: dict, seed: int, ratios: dict[str, float], group_key: str | None,
           method: str = SPLIT_METHOD) -> dict[str, list[str]]:
    missing = [n for n in SPLIT_NAMES if n not in ratios]
    if missing or any(ratios[n] < 0 for n in SPLIT_NAMES) or abs(sum(ratios[n] for n in SPLIT_NAMES) - 1) > 1e-6:
        raise CvreproError(f"params.yaml: split.ratios must give train, val and test, each >= 0, summing to 1; got {ratios}")
    bounds = (ratios["train"], ratios["train"] + ratios["val"])
    members: dict[str, list[str]] = {n: [] for n in SPLIT_NAMES}
    subsets = [SUBSET_NAMES.get(str(f.get("attributes", {}).get("subset", "")).lower()) for f in manifest["files"]]
    has_val = "val" in subsets
    for f in manifest["files"]:
        fixed = _subset_split(f, has_val) if method == "subset" else None
        if fixed:
            members[fixed].append(f["path"])
            continue
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
        if method == "subset" and SUBSET_NAMES.get(str(f.get("attributes", {}).get("subset", "")).lower()) == "train":
            u *= bounds[1]  # a train subset without a val subset: train/val by the ratios, never test
        name = "train" if u < bounds[0] else "val" if u < bounds[1] else "test"
        members[name].append(f["path"])
    return {n: sorted(v) for n, v in members.items()}


def fillable_splits(manifest: dict, method: str) -> list[str]:
    """The splits the method can put images in. `subset` never moves a train or val subset image into
    test, so a source whose subsets are only train and val (a YOLO data.yaml without `test:`) has no test
    split by design; the other methods can fill every split."""
    if method != "subset":
        return list(SPLIT_NAMES)
    subsets = {SUBSET_NAMES.get(str(f.get("attributes", {}).get("subset", "")).lower()) for f in manifest["files"]}
    return [n for n in SPLIT_NAMES if n != "test" or subsets - {"train", "val"}]


def require_no_empty_split(counts: dict[str, int], ratios: dict[str, float], where: str,
                           fillable: list[str] | tuple[str, ...] = SPLIT_NAMES) -> None:
    """An empty split (with a ratio above 0, that the method could fill) trains or scores on nothing: refuse
    it, naming the zero count."""
    empty = [n for n in fillable if counts.get(n, 0) == 0 and ratios.get(n, 0) > 0]
    if empty:
        shown = ", ".join(f"{n} {counts.get(n, 0)}" for n in SPLIT_NAMES)
        raise CvreproError(f"{where}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would hold 0 "
                           f"images ({shown} of {sum(counts.values())}, ratios {ratios}): add images, change "
                           "split.ratios or split.seed")


SETTINGS = ("method", "seed", "ratios", "group_key")  # a previous split made with other settings is not followed


def read_previous(path: Path) -> dict | None:
    """The last splits.json, or None (missing or unreadable: every image is assigned by the rule)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _history(previous: dict | None, split: Split) -> dict[str, str]:
    """path -> split of the previous split, if it was made with these settings by a split that kept duplicates
    together (it records `duplicates`): a split made before that may hold leaks, which the first split after it
    mends by moving the non-anchor members instead of keeping them as history."""
    if not isinstance(previous, dict) or not isinstance(previous.get("splits"), dict) or "duplicates" not in previous:
        return {}
    now = {"method": split.method, "seed": split.seed, "ratios": split.ratios, "group_key": split.group_key}
    if any(previous.get(k) != now[k] for k in SETTINGS):
        return {}
    return {p: s for p, s in split_of_path(previous).items() if s in SPLIT_NAMES}


def _together(manifest: dict, members: dict[str, list[str]], split: Split,
              previous: dict | None) -> tuple[dict[str, list[str]], list[dict]]:
    """Duplicates and history applied to the rule's assignment (dataset/duplicates.py `keep_together`)."""
    key, method = split.group_key, split.method
    by_path = {f["path"]: f for f in manifest["files"]}
    # method subset: an image the source put in a subset stays in it (a train image may go to val by the hash,
    # never to test): a source whose own split leaks keeps the leak, for `check` and the release gate to report
    pinned = {p for p, f in by_path.items()
              if SUBSET_NAMES.get(str(f.get("attributes", {}).get("subset", "")).lower())} if method == "subset" else set()

    def unit_of(path: str) -> str:  # a subset-fixed image may lack the group_key attribute: its own unit
        value = by_path[path].get("attributes", {}).get(key) if key else None
        return f"group:{value}" if value is not None else path

    return keep_together(members, manifest, _history(previous, split), unit_of, pinned)


def split_record(manifest: dict, split: Split, task, previous: dict | None = None) -> dict:
    """splits.json: the membership of every split, with the seed, method and rule that rebuild it (`split`, the
    config's section). previous: the last splits.json (its images keep their splits when the settings are the same)."""
    method = split.method
    if split.seed is None:
        raise CvreproError("params.yaml: split.seed is null; the split needs a seed (an integer)")
    members = assign(manifest, split.seed, split.ratios, split.group_key, method)
    members, groups = _together(manifest, members, split, previous)
    fillable = fillable_splits(manifest, method)
    require_no_empty_split({n: len(v) for n, v in members.items()}, split.ratios, "params.yaml: split", fillable)
    for name in sorted(set(SPLIT_NAMES) - set(fillable)):
        print(f"note: split.method subset: the source has no {name} subset, so the {name} split is empty",
              file=sys.stderr)
    return {
        "method": method,
        "rule": "u = int(sha256(f'{seed}:{identity}')[:8 bytes]) / 2**64; train if u < r_train, "
        "val if u < r_train + r_val, else test; identity = image path or 'group:<value>'; then an image in the "
        "previous splits.json made with these settings keeps its split, and each duplicate group (with the "
        "group_key groups of its members) takes the split of its anchor: a member of the previous split, else "
        "one of a kept subset, else any, the first by path"
        + ("; method subset: an image's `subset` attribute (train/val/test, valid, validation) decides first, "
           "a train subset without a val subset takes u * (r_train + r_val)" if method == "subset" else ""),
        "seed": split.seed,
        "ratios": split.ratios,
        "group_key": split.group_key,
        "snapshot_id": manifest["snapshot_id"],
        "counts": {n: len(v) for n, v in members.items()},
        "splits": members,
        "duplicates": groups,
        **({"fillable": fillable} if len(fillable) < len(SPLIT_NAMES) else {}),  # the other methods fill all
        **task.split_summary(manifest, members, split.ratios),
    }
