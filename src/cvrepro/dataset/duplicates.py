"""Duplicate images: the same picture twice in a dataset, as the same bytes or re-encoded, resized, recompressed.

A duplicate across splits is a leak (the model is scored on a picture it trained on), and a duplicate with two
different labellings is a labelling error. Snapshot finds them (`find_duplicates`) and records them in the
manifest's `duplicates` key; split keeps every group in one split (`keep_together`); `leaks` lists the pairs a
given split puts apart (for `cvrepro check` and releases).

- exact: the same content md5 (from the manifest: nothing is read);
- near: a 64-bit dHash within `dataset.duplicates.near_threshold` bits (dataset/dhash.py; hashes cached by md5,
  so a new batch hashes only new images; `near_threshold: null` turns the near search off).
Groups are the connected components of these links; each records its members (path, md5, dhash) and the links
of its minimum spanning tree (the closest pair that joined each member), and `conflicts`: members whose labels
disagree, as the task judges (`Task.duplicate_conflict`, `dataset.duplicates.label_iou`), with both labels.

The `duplicates` key is derived from the content, like `stats`: it is not part of the `snapshot_id`.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from cvrepro.config.params import DUPLICATES
from cvrepro.config.schema import Duplicates
from cvrepro.core.fileio import json_text, read_bytes
from cvrepro.core.problems import Problems
from cvrepro.dataset.dhash import dhashes, distance, near_pairs
from cvrepro.dataset.index import BoxCheck, load_coco, parse_categories, parse_images

# 3 bits: the raccoon photos' re-encoded copies differ in 0-2 bits, distinct photos in 9 or more; the demo's
# 64x64 synthetic classification images (flat shapes on smooth backgrounds) have two distinct pictures 4 apart.
DEFAULTS = DUPLICATES  # config/params.py
HASH_CACHE = "snapshot-dhash.tsv"  # beside the image check cache (.cvrepro/)


class _Forest:
    """Union-find; `join` says whether the link merged two components (a spanning-tree link)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> bool:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def _links(files: list[dict], hashes: np.ndarray | None, threshold: int | None) -> list[tuple[int, int, int]]:
    """Every (i, j, distance) link, same bytes first, then by distance: the order that makes the forest minimal."""
    first: dict[str, int] = {}
    links = []
    for i, f in enumerate(files):
        j = first.setdefault(f["md5"], i)
        if j != i:
            links.append((j, i, 0))
    if hashes is not None and threshold is not None:
        hashes, valid = hashes if isinstance(hashes, tuple) else (hashes, np.ones(len(hashes), dtype=bool))
        keep = np.flatnonzero(valid)  # a file that did not decode has no hash: exact links only
        links += [(int(keep[i]), int(keep[j]), int(d)) for i, j, d in near_pairs(hashes[keep], threshold)]
    return links


def find_groups(files: list[dict], hashes, threshold: int | None) -> list[dict]:
    """Groups of duplicates among manifest entries (sorted by path), each {kind, members, links}. hashes: None,
    a uint64 array in `files` order, or (that array, which entries have a hash) as `dhashes` gives."""
    forest, tree = _Forest(len(files)), []
    for i, j, d in _links(files, hashes, threshold):
        if forest.join(i, j):
            tree.append((i, j, d))
    members: dict[int, list[int]] = {}
    for i in sorted({k for link in tree for k in link[:2]}):
        members.setdefault(forest.root(i), []).append(i)
    links_of: dict[int, list] = {}
    for i, j, d in tree:
        links_of.setdefault(forest.root(i), []).append(
            {"a": files[i]["path"], "b": files[j]["path"], "distance": d,
             "same_bytes": files[i]["md5"] == files[j]["md5"]})
    groups = []
    for root, idx in members.items():
        groups.append({
            "kind": "exact" if len({files[i]["md5"] for i in idx}) == 1 else "near",
            "members": [{"path": files[i]["path"], "md5": files[i]["md5"],
                         "dhash": _hex(hashes, i)} for i in idx],
            "links": sorted(links_of[root], key=lambda e: (e["a"], e["b"])),
        })
    return sorted(groups, key=lambda g: g["members"][0]["path"])


def _hex(hashes, i: int) -> str | None:
    """Entry i's dHash as 16 hex digits; None without one."""
    if hashes is None:
        return None
    values, valid = hashes if isinstance(hashes, tuple) else (hashes, None)
    return f"{int(values[i]):016x}" if valid is None or valid[i] else None


def _labels_of(index_path: Path, task, invalid: str, image_ids: set[int]) -> dict[int, list[dict]]:
    """image id -> its labels as the task reduced them for the manifest (what `labels_hash` hashes), for a few
    images: the index is read again only when some group's labels differ."""
    problems = Problems()
    images_raw, anns_raw, cats_raw = load_coco(index_path, json_text(index_path, read_bytes(index_path)), problems,
                                               task.annotations_required)
    class_map = parse_categories(cats_raw, index_path, problems)
    images = parse_images([im for im in images_raw if isinstance(im, dict) and im.get("id") in image_ids],
                          index_path, problems)
    anns = [a for a in anns_raw if isinstance(a, dict) and a.get("image_id") in image_ids]
    by_image = task.parse_labels(anns, images, class_map, index_path, problems, set(), BoxCheck(invalid, "-"))
    return {i: by_image.get(i, []) for i in image_ids}


def _conflicts(groups: list[dict], by_path: dict[str, dict], labels, task, dup: Duplicates) -> None:
    """Add `conflicts` to each group: one per pair of distinct labellings (labels hash and image size)."""
    keyed = []
    for g in groups:
        seen: dict[tuple, str] = {}
        for m in g["members"]:
            f = by_path[m["path"]]
            seen.setdefault((f["labels_hash"], f["width"], f["height"]), m["path"])
        keyed.append(list(seen.values()))
    need = {by_path[p]["image_id"] for paths in keyed if len(paths) > 1 for p in paths}
    label_map = labels(need) if need else {}
    for g, paths in zip(groups, keyed):
        g["conflicts"] = []
        for pa, pb in combinations(paths, 2):
            a, b = ({**by_path[p], "labels": label_map.get(by_path[p]["image_id"], [])} for p in (pa, pb))
            reason = task.duplicate_conflict(a, b, dup)
            if reason:
                g["conflicts"].append({"a": pa, "b": pb, "reason": reason, "a_labels": a["labels"],
                                       "b_labels": b["labels"]})


def find_duplicates(manifest: dict, raw_dir: Path, index_path: Path, task, dup: Duplicates, invalid: str = "fail",
                    cache_dir: Path | None = None, workers: int = 1) -> dict:
    """The manifest's `duplicates` entry. dup: `dataset.duplicates`; cache_dir: where the hash cache lives."""
    files = manifest["files"]
    threshold = dup.near_threshold
    hashes = None
    if threshold is not None:
        hashes = dhashes(raw_dir, files, Path(cache_dir) / HASH_CACHE if cache_dir else None, workers)
    groups = find_groups(files, hashes, threshold)
    by_path = {f["path"]: f for f in files} if groups else {}
    _conflicts(groups, by_path, lambda ids: _labels_of(index_path, task, invalid, ids), task, dup)
    return {
        "method": "exact: same md5; near: 64-bit dHash (9x8 grey) within near_threshold bits; groups: connected "
                  "components, links: their minimum spanning tree",
        "near_threshold": dup.near_threshold, "label_iou": float(dup.label_iou),  # as manifests have recorded it
        "counts": {"groups": len(groups), "exact_groups": sum(g["kind"] == "exact" for g in groups),
                   "images": sum(len(g["members"]) for g in groups),
                   "conflicts": sum(len(g["conflicts"]) for g in groups)},
        "groups": groups,
    }


# --------------------------------------------------------------------------- leaks and the split


def groups_of(manifest_or_groups) -> list[dict]:
    """The groups of a manifest, of its `duplicates` entry, or a list of groups as they are."""
    if isinstance(manifest_or_groups, dict):
        entry = manifest_or_groups.get("duplicates", manifest_or_groups)
        return list((entry or {}).get("groups") or [])
    return list(manifest_or_groups or [])


def split_of_path(splits: dict) -> dict[str, str]:
    """path -> split, from splits.json (its `splits`), {split: [paths]} or {path: split}."""
    members = splits.get("splits", splits)
    if all(isinstance(v, str) for v in members.values()):
        return dict(members)
    return {p: name for name, paths in members.items() for p in paths}


def leaks(manifest_or_groups, splits: dict) -> list[dict]:
    """Every pair of duplicates that `splits` puts in different splits: {a, b, a_split, b_split, distance,
    same_bytes, kind}, sorted. Empty for a split made by this version's split stage."""
    where = split_of_path(splits)
    out = []
    for g in groups_of(manifest_or_groups):
        for a, b in combinations(g["members"], 2):
            sa, sb = where.get(a["path"]), where.get(b["path"])
            if sa and sb and sa != sb:
                d = None if a.get("dhash") is None or b.get("dhash") is None else \
                    distance(int(a["dhash"], 16), int(b["dhash"], 16))
                out.append({"a": a["path"], "b": b["path"], "a_split": sa, "b_split": sb, "kind": g["kind"],
                            "distance": 0 if a["md5"] == b["md5"] else d, "same_bytes": a["md5"] == b["md5"]})
    return sorted(out, key=lambda e: (e["a"], e["b"]))


def keep_together(members: dict[str, list[str]], manifest: dict, previous: dict[str, str], unit_of,
                  pinned: set[str] = frozenset()) -> tuple[dict[str, list[str]], list[dict]]:
    """Move images so that every duplicate group (with the `group_key` groups its members belong to) is in one
    split, and an image assigned before keeps its split: (members, the groups as splits.json records them).

    A component follows its anchor: the member assigned earliest, i.e. in `previous` (the last splits.json made
    with the same settings), then one whose split is `pinned` (a source's own subset), then any; ties by path.
    Only free members move: an image in `previous` keeps its released split and a pinned one its source's
    subset (an official test set stays the test set), so an image joining a released group never moves a
    released image. Two fixed members in different splits stay apart, recorded with `"apart": true`: that is a
    leak, which `cvrepro check` reports and `release dataset` refuses under `check.policy: strict`.
    unit_of(path): the `group_key` unit of an image (or its path)."""
    where = split_of_path(members)
    where.update({p: s for p, s in previous.items() if p in where})
    units: dict[str, list[str]] = {}
    for p in where:
        units.setdefault(unit_of(p), []).append(p)
    groups = groups_of(manifest)
    forest = _Forest(len(units))
    index = {u: i for i, u in enumerate(units)}
    for g in groups:
        paths = [m["path"] for m in g["members"] if m["path"] in where]
        for p in paths[1:]:
            forest.join(index[unit_of(paths[0])], index[unit_of(p)])
    components: dict[int, list[str]] = {}
    for u, i in index.items():
        components.setdefault(forest.root(i), []).extend(units[u])
    for paths in components.values():
        anchor = min(paths, key=lambda p: (p not in previous, p not in pinned, p))
        fixed = {p for p in paths if p in previous or p in pinned}
        for p in paths:
            if p not in fixed:
                where[p] = where[anchor]
    recorded = []
    for g in groups:
        paths = [m["path"] for m in g["members"] if m["path"] in where]
        if paths:
            apart = len({where[p] for p in paths}) > 1
            recorded.append({"members": [m["path"] for m in g["members"]], "split": where[paths[0]],
                             **({"apart": True} if apart else {})})
    out: dict[str, list[str]] = {n: [] for n in members}
    for p, name in where.items():
        out[name].append(p)
    return {n: sorted(v) for n, v in out.items()}, recorded
