"""The content-level diff of two dataset versions; the bump it requires is dataset/bump.py's policy.

A dataset state is the manifest (files, content hashes, label hashes, class map),
the labels themselves and the split membership. States are read from the work
tree or, at any git revision (a `DS-x.y.z` tag), through DVC, which takes the
bytes from the local cache or the remote.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from cvrepro.config.params import recorded
from cvrepro.core.fileio import CvreproError, read_json
from cvrepro.core.paths import LABELS_DIR, MANIFEST, PARAMS, SPLITS
from cvrepro.core.vcs import git_bytes
from cvrepro.dataset.bump import required_bump

MATCH_IOU = 0.5  # boxes on the same image overlapping at least this much are one object
LIST_LIMIT = 1000  # per list in a release record; `cvrepro diff` recomputes the full lists


@dataclass
class DatasetState:
    label: str  # "DS-0.2.0", a revision, or "workspace"
    manifest: dict
    annotations: dict  # the COCO-shaped labels file
    splits: dict | None
    root: Path | None = None  # the work tree, or None when the state was read at a revision
    fs: Any = None  # the DVCFileSystem at that revision: masks (segmentation) are read through it on demand

    def read_bytes(self, path: Path) -> bytes:
        if self.fs is None:
            return (self.root / path).read_bytes()
        with self.fs.open(path.as_posix(), "rb") as f:
            return f.read()


def _read_at(fs, rev: str, path: Path) -> Any:
    try:
        with fs.open(path.as_posix(), "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CvreproError(f"{path}: not found at {rev}") from None
    except Exception as e:  # DVC raises many types (missing cache, no remote, ...): say which file and why
        raise CvreproError(f"{path} at {rev}: cannot read it through DVC ({type(e).__name__}: {e})") from None


def _annotations_file(params_text: bytes | None) -> Path:
    """The labels index named by that revision's params.yaml (`dataset.annotations`), read as recorded: a
    tag's params.yaml need not fit today's schema."""
    from cvrepro.dataset.index import annotations_path

    params = yaml.safe_load(params_text) if params_text else None
    params = params if isinstance(params, dict) else {}
    return annotations_path(recorded(params, "task"), recorded(params, "dataset.name"),
                            recorded(params, "dataset.task"), recorded(params, "dataset.annotations_by_task", {}),
                            recorded(params, "dataset.annotations"))


def load_state(root: Path, rev: str | None = None) -> DatasetState:
    """The dataset at `rev` (git revision, e.g. a DS tag) or, with None, in the work tree."""
    root = Path(root)
    if rev is None or rev == "workspace":
        splits = read_json(root / SPLITS) if (root / SPLITS).exists() else None
        ann = _annotations_file((root / PARAMS).read_bytes() if (root / PARAMS).exists() else None)
        return DatasetState("workspace", read_json(root / MANIFEST), read_json(root / ann), splits, root)
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(str(root), rev=rev)  # one repo at that revision for every file read from it
    except Exception as e:
        raise CvreproError(f"{rev}: cannot open the repository at that revision ({type(e).__name__}: {e})") from None
    try:
        splits = _read_at(fs, rev, SPLITS)
    except CvreproError:
        splits = None  # a snapshot released before its split was run
    ann = _annotations_file(git_bytes(root, rev, PARAMS.as_posix()))
    return DatasetState(rev, _read_at(fs, rev, MANIFEST), _read_at(fs, rev, ann), splits, None, fs)


def changed_pixels(old: DatasetState, new: DatasetState, old_entry: dict, new_entry: dict) -> float | None:
    """Fraction of pixels whose class differs between the two masks of one image (segmentation)."""
    from cvrepro.dataset.masks import decode_mask

    try:
        masks = [decode_mask(st.read_bytes(LABELS_DIR / e["mask_file"]), LABELS_DIR / e["mask_file"])
                 for st, e in ((old, old_entry), (new, new_entry))]
    except Exception:  # a mask that cannot be read at that revision: report the change without a fraction
        return None
    if masks[0].shape != masks[1].shape:
        return 1.0
    return round(float((masks[0] != masks[1]).mean()), 6)


# --------------------------------------------------------------------------- boxes


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two COCO xywh boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = min(ax2, bx2) - max(a[0], b[0])
    h = min(ay2, by2) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_labels(old: list[dict], new: list[dict]) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """Pair one image's old and new annotations: first by annotation id (ids are stable
    under `cvrepro labels apply`), then the rest greedily by IoU >= MATCH_IOU (for tools
    that renumber). Image-level labels (no bbox) pair with each other. Returns
    (pairs, removed, added)."""
    new_by_id = {a.get("id"): a for a in new}
    pairs, rest_old = [], []
    for a in old:
        b = new_by_id.pop(a.get("id"), None) if a.get("id") is not None else None
        (pairs.append((a, b)) if b is not None else rest_old.append(a))
    rest_new = list(new_by_id.values())
    candidates = []
    for i, a in enumerate(rest_old):
        for j, b in enumerate(rest_new):
            if "bbox" in a and "bbox" in b:
                score = iou(a["bbox"], b["bbox"])
            else:
                score = 1.0 if "bbox" not in a and "bbox" not in b else 0.0
            if score >= MATCH_IOU:
                candidates.append((-score, i, j))
    used_old, used_new = set(), set()
    for _, i, j in sorted(candidates):
        if i not in used_old and j not in used_new:
            used_old.add(i), used_new.add(j)
            pairs.append((rest_old[i], rest_new[j]))
    removed = [a for i, a in enumerate(rest_old) if i not in used_old]
    added = [b for j, b in enumerate(rest_new) if j not in used_new]
    return pairs, removed, added


def label_counts(old: list[dict], new: list[dict]) -> dict[str, int]:
    """How one image's labels changed: added, removed, moved (box changed) and relabelled (category changed)."""
    pairs, gone, new_anns = match_labels(old, new)
    change = {"added": len(new_anns), "removed": len(gone), "moved": 0, "relabelled": 0}
    for a, b in pairs:
        if a.get("category_id") != b.get("category_id"):
            change["relabelled"] += 1
        if "bbox" in a and "bbox" in b and [float(x) for x in a["bbox"]] != [float(x) for x in b["bbox"]]:
            change["moved"] += 1
    return change


def _labels_by_path(state: DatasetState) -> dict[str, list[dict]]:
    id_to_path = {f["image_id"]: f["path"] for f in state.manifest["files"]}
    out: dict[str, list[dict]] = {p: [] for p in id_to_path.values()}
    for ann in state.annotations.get("annotations", []):
        path = id_to_path.get(ann.get("image_id"))
        if path is not None:
            out[path].append(ann)
    return out


def _membership(splits: dict | None) -> dict[str, str]:
    if not splits:
        return {}
    return {p: name for name, paths in splits["splits"].items() for p in paths}


# --------------------------------------------------------------------------- diff


def dataset_diff(old: DatasetState, new: DatasetState, task_of: Callable[[dict], Any]) -> dict:
    """What changed from `old` to `new`, and the bump that requires (`required_bump`, dataset/bump.py).

    task_of: a manifest's task (`cvrepro.tasks.of_manifest`), asked only where labels changed: the task says
    what a change of its labels is (boxes matched, mask pixels counted)."""
    om, nm = old.manifest, new.manifest
    schema_changed = om.get("schema") != nm.get("schema") or om.get("task") != nm.get("task")
    oc, nc = om.get("class_map", {}), nm.get("class_map", {})
    class_map = {
        "added": {k: nc[k] for k in sorted(set(nc) - set(oc), key=int)},
        "removed": {k: oc[k] for k in sorted(set(oc) - set(nc), key=int)},
        "renamed": {k: [oc[k], nc[k]] for k in sorted(set(oc) & set(nc), key=int) if oc[k] != nc[k]},
    }
    ofiles = {f["path"]: f for f in om["files"]}
    nfiles = {f["path"]: f for f in nm["files"]}
    added = sorted(set(nfiles) - set(ofiles))
    removed = sorted(set(ofiles) - set(nfiles))
    common = sorted(set(ofiles) & set(nfiles))
    modified = [p for p in common if ofiles[p]["md5"] != nfiles[p]["md5"]]
    attrs_changed = [p for p in common if ofiles[p].get("attributes") != nfiles[p].get("attributes")]

    names = {**{int(k): v for k, v in oc.items()}, **{int(k): v for k, v in nc.items()}}
    olabels, nlabels = _labels_by_path(old), _labels_by_path(new)
    boxes = Counter()
    relabelled_images: list[str] = []
    label_changes: list[dict] = []
    masks_changed: list[dict] = []
    task = task_of(nm) if not schema_changed else None
    for p in common:
        if ofiles[p].get("labels_hash") == nfiles[p].get("labels_hash"):
            continue
        kind, change = (task or task_of(om)).label_change(old, new, ofiles[p], nfiles[p], olabels[p], nlabels[p])
        if kind == "mask":  # labels that are pixels: the fraction that changed
            masks_changed.append(change)
            continue
        change = {"path": p, **change}
        for k in ("added", "removed", "moved", "relabelled"):
            boxes[k] += change[k]
        if any(change[k] for k in ("added", "removed", "moved", "relabelled")):
            label_changes.append(change)
            if change["relabelled"]:
                relabelled_images.append(p)
    boxes["added"] += sum(len(nlabels[p]) for p in added)  # labels that came with new images
    boxes["removed"] += sum(len(olabels[p]) for p in removed)

    opc, npc = om.get("stats", {}).get("per_class", {}), nm.get("stats", {}).get("per_class", {})
    per_class = {c: npc.get(c, 0) - opc.get(c, 0) for c in sorted(set(opc) | set(npc))}
    omem, nmem = _membership(old.splits), _membership(new.splits)
    split_moves = sorted(p for p in common if p in omem and p in nmem and omem[p] != nmem[p])

    diff = {
        "schema_changed": schema_changed,
        "class_map": class_map,
        "images": {"added": added, "removed": removed, "modified": modified, "attributes_changed": attrs_changed},
        "labels": {"boxes": {k: boxes[k] for k in ("added", "removed", "moved", "relabelled")},
                   "images_relabelled": relabelled_images, "changes": label_changes,
                   "masks_changed": masks_changed,
                   "class_names": {str(k): v for k, v in sorted(names.items())}},
        "per_class_delta": per_class,
        "split_changes": split_moves,
    }
    required, reason = required_bump(diff)
    return {"from": {"label": old.label, "snapshot_id": om.get("snapshot_id")},
            "to": {"label": new.label, "snapshot_id": nm.get("snapshot_id")},
            "required_bump": required, "reason": reason, **diff}


def truncated(diff: dict, limit: int = LIST_LIMIT) -> dict:
    """The diff with every list cut to `limit` entries (counts stay exact), for release records."""
    def cut(obj):
        if isinstance(obj, dict):
            return {k: cut(v) for k, v in obj.items()}
        if isinstance(obj, list) and len(obj) > limit:
            return obj[:limit] + [f"... {len(obj) - limit} more (run `cvrepro diff` for all)"]
        return obj
    return cut(diff)


def summary_lines(diff: dict) -> list[str]:
    """The changelog in words, for release notes and the terminal."""
    im, lb = diff["images"], diff["labels"]["boxes"]
    lines = [f"- images: {len(im['added'])} added, {len(im['removed'])} removed, {len(im['modified'])} modified "
             f"(content hash), {len(im['attributes_changed'])} with changed attributes"]
    lines.append(f"- labels: {lb['added']} added, {lb['removed']} removed, {lb['moved']} moved, "
                 f"{lb['relabelled']} relabelled (on {len(diff['labels']['changes'])} existing images)")
    masks = diff["labels"].get("masks_changed") or []
    if masks:
        fractions = [m["changed_pixels"] for m in masks if m["changed_pixels"] is not None]
        mean = f", on average {sum(fractions) / len(fractions):.2%} of their pixels" if fractions else ""
        lines.append(f"- masks: {len(masks)} images with changed masks{mean}")
    deltas = ", ".join(f"{c} {d:+d}" for c, d in diff["per_class_delta"].items() if d)
    lines.append(f"- per-class count deltas: {deltas or 'none'}")
    lines.append(f"- images that changed split: {len(diff['split_changes'])}")
    cm = diff["class_map"]
    if any(cm.values()) or diff["schema_changed"]:
        lines.append(f"- class map: added {cm['added']}, removed {cm['removed']}, renamed {cm['renamed']}"
                     + ("; task or schema changed" if diff["schema_changed"] else ""))
    return lines


def format_diff(diff: dict, details: int = 20) -> str:
    out = [f"{diff['from']['label']} -> {diff['to']['label']}: "
           f"{(diff['required_bump'] or 'no') + ' change'} ({diff['reason']})"]
    out += summary_lines(diff)
    for kind in ("added", "removed", "modified"):
        paths = diff["images"][kind]
        if paths:
            out.append(f"  {kind}: " + ", ".join(paths[:details]) + (" ..." if len(paths) > details else ""))
    for c in diff["labels"]["changes"][:details]:
        parts = ", ".join(f"{c[k]} {k}" for k in ("added", "removed", "moved", "relabelled") if c[k])
        out.append(f"  {c['path']}: {parts}")
    if len(diff["labels"]["changes"]) > details:
        out.append(f"  ... {len(diff['labels']['changes']) - details} more images with label changes (--json for all)")
    return "\n".join(out)
