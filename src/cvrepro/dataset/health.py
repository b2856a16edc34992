"""Dataset health: the pure computations behind `cvrepro check` (provenance/check.py gathers and renders).

Each check returns a *finding*: {"count": n, "level": "ok"|"warn"|"error", "summary": one line,
"items": the worst examples first, at most `max_items`}. The count is always complete; only the
examples are cut. Levels: "error" for what can spoil a model's evaluation without anyone noticing
(leakage across splits, copies of one picture labelled differently), "warn" for the rest; the
release policy (`check.policy`) decides whether an error refuses a release.

Box checks work on numpy arrays (one row a box), so 100k annotations take a fraction of the time
json takes to read them (benchmarks/bench_check.py). Duplicate groups come from the manifest's
`duplicates` key when it has one (dataset/duplicates.py: exact by md5 and near by dHash), else exact
copies are grouped here by md5.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any, Callable, Iterable

import numpy as np

from cvrepro.config.params import CHECK
from cvrepro.config.schema import Check
from cvrepro.core.fileio import CvreproError

BLOCKING = ("leakage", "label_conflicts")  # what `check.policy: strict` refuses a release on



def finding(count: int, summary: str, items: list, max_items: int, level: str = "warn") -> dict:
    return {"count": int(count), "level": level if count else "ok", "summary": summary, "items": items[:max_items]}


# --------------------------------------------------------------------------- every task


def class_imbalance(per_class: dict[str, int], ratio: float, max_items: int) -> dict:
    """Most / fewest objects per class above `ratio`, or a class with none: items are the classes, rarest first."""
    if not per_class:
        return finding(0, "no classes", [], max_items)
    counts = sorted(per_class.items(), key=lambda kv: (kv[1], kv[0]))
    (rare, low), (common, high) = counts[0], counts[-1]
    worst = float("inf") if low == 0 else high / low
    flagged = worst > ratio
    items = [{"class": c, "objects": n, "share": round(n / max(1, sum(per_class.values())), 4)} for c, n in counts]
    said = f"{common} has {high} objects, {rare} {low}" + (f" ({worst:.1f}x, over {ratio:g}x)" if flagged else
                                                           f" ({worst:.1f}x, within {ratio:g}x)")
    return finding(1 if flagged else 0, said, items if flagged else [], max_items)


def unlabeled_images(files: list[dict], max_items: int) -> dict:
    paths = [f["path"] for f in files if not f.get("objects")]
    return finding(len(paths), f"{len(paths)} of {len(files)} images have no labels",
                   [{"path": p} for p in paths], max_items)


# --------------------------------------------------------------------------- boxes


class Boxes:
    """Every box as arrays: image index (into `files`), category id, x, y, w, h, and the image's width/height."""

    def __init__(self, files: list[dict], annotations: Iterable[dict]):
        self.files = files
        ids = np.fromiter((f["image_id"] for f in files), dtype=np.int64, count=len(files))
        order = np.argsort(ids, kind="stable")
        kept = [a for a in annotations if not a.get("iscrowd")]  # crowd regions are for evaluation only
        try:  # snapshot checked every field; a labels file edited since is said, not a traceback
            image_ids = np.fromiter((a["image_id"] for a in kept), dtype=np.int64, count=len(kept))
            category = np.fromiter((a["category_id"] for a in kept), dtype=np.int64, count=len(kept))
            xywh = np.asarray([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4)
        except (KeyError, TypeError, ValueError) as e:
            raise CvreproError(f"the labels index has an annotation the snapshot did not check ({type(e).__name__}: "
                               f"{e}): run `dvc repro snapshot` first") from None
        pos = np.searchsorted(ids[order], image_ids).clip(0, max(len(ids) - 1, 0))
        known = (ids[order][pos] == image_ids) if len(ids) else np.zeros(len(image_ids), bool)
        self.image, self.category, xywh = order[pos[known]], category[known], xywh[known]
        self.x, self.y, self.w, self.h = xywh.T
        sizes = np.array([[f["width"], f["height"]] for f in files], dtype=np.float64).reshape(-1, 2)
        self.img_w, self.img_h = sizes[self.image, 0], sizes[self.image, 1]

    def __len__(self) -> int:
        return len(self.image)

    def item(self, i: int, class_map: dict[str, str], **extra) -> dict:
        f = self.files[self.image[i]]
        return {"path": f["path"], "image_id": f["image_id"], "class": class_map.get(str(self.category[i]), str(self.category[i])),
                "bbox": [round(float(v), 2) for v in (self.x[i], self.y[i], self.w[i], self.h[i])], **extra}


def box_sizes(b: Boxes, class_map: dict[str, str], check: Check) -> dict[str, dict]:
    """Tiny boxes (area fraction under tiny_box_area or a side under tiny_box_side px), huge boxes (area fraction
    over huge_box_area) and aspect outliers (longer side over aspect_max x the shorter), worst first."""
    n = check.max_items
    frac = b.w * b.h / np.maximum(b.img_w * b.img_h, 1.0)
    side = np.minimum(b.w, b.h)
    tiny = np.flatnonzero((frac < check.tiny_box_area) | (side < check.tiny_box_side))
    tiny = tiny[np.argsort(frac[tiny], kind="stable")]
    huge = np.flatnonzero(frac > check.huge_box_area)
    huge = huge[np.argsort(-frac[huge], kind="stable")]
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.maximum(b.w, b.h) / np.minimum(b.w, b.h)
    aspect = np.where(np.isnan(aspect), np.inf, aspect)
    odd = np.flatnonzero(aspect > check.aspect_max)
    odd = odd[np.argsort(-aspect[odd], kind="stable")]
    def listed(idx, key, values):
        return [b.item(int(i), class_map, **{key: round(float(values[i]), 6) if np.isfinite(values[i]) else None})
                for i in idx[:n]]
    return {
        "tiny_boxes": finding(len(tiny), f"{len(tiny)} boxes under {check.tiny_box_area:g} of their image's area "
                              f"or {check.tiny_box_side:g} px on a side", listed(tiny, "area_fraction", frac), n),
        "huge_boxes": finding(len(huge), f"{len(huge)} boxes over {check.huge_box_area:g} of their image's area",
                              listed(huge, "area_fraction", frac), n),
        "aspect_outliers": finding(len(odd), f"{len(odd)} boxes over {check.aspect_max:g}:1",
                                   listed(odd, "aspect", aspect), n),
    }


def boxes_per_image(b: Boxes, check: Check) -> dict:
    """Images with more boxes than Q3 + k x max(IQR, 1) (k = boxes_per_image_iqr), most first."""
    n = check.max_items
    counts = np.bincount(b.image, minlength=len(b.files))
    if not len(counts):
        return finding(0, "no images", [], n)
    q1, q3 = np.percentile(counts, [25, 75])
    limit = q3 + check.boxes_per_image_iqr * max(q3 - q1, 1.0)
    out = np.flatnonzero(counts > limit)
    out = out[np.argsort(-counts[out], kind="stable")]
    items = [{"path": b.files[i]["path"], "image_id": b.files[i]["image_id"], "boxes": int(counts[i])} for i in out[:n]]
    return finding(len(out), f"{len(out)} images with more than {limit:g} boxes (median {np.median(counts):g})", items, n)


def near_identical(b: Boxes, class_map: dict[str, str], check: Check) -> dict:
    """Pairs of boxes of one class on one image with IoU over near_identical_iou (a box labelled twice).

    Boxes sorted by (image, class, x); box i is compared with i+1, i+2, ... while they share the group and
    can still overlap (x of the later one under the right edge of i), so the cost is the overlapping pairs,
    not every pair of a group."""
    n, threshold = check.max_items, check.near_identical_iou
    order = np.lexsort((b.x, b.category, b.image))
    img, cat = b.image[order], b.category[order]
    x1, y1 = b.x[order], b.y[order]
    x2, y2 = x1 + b.w[order], y1 + b.h[order]
    area = b.w[order] * b.h[order]
    found_i, found_j, found_iou = [], [], []
    active = np.arange(len(order) - 1)
    k = 1
    while len(active):
        j = active + k
        keep = (img[j] == img[active]) & (cat[j] == cat[active]) & (x1[j] < x2[active])
        active, j = active[keep], j[keep]
        iw = np.minimum(x2[active], x2[j]) - np.maximum(x1[active], x1[j])
        ih = np.minimum(y2[active], y2[j]) - np.maximum(y1[active], y1[j])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        iou = inter / np.maximum(area[active] + area[j] - inter, 1e-12)
        hit = iou > threshold
        found_i.append(active[hit]), found_j.append(j[hit]), found_iou.append(iou[hit])
        k += 1
        active = active[active + k < len(order)]
    i_all = order[np.concatenate(found_i)] if found_i else np.zeros(0, np.int64)
    j_all = order[np.concatenate(found_j)] if found_j else np.zeros(0, np.int64)
    ious = np.concatenate(found_iou) if found_iou else np.zeros(0)
    worst = np.argsort(-ious, kind="stable")[:n]
    items = [{**b.item(int(i_all[w]), class_map, iou=round(float(ious[w]), 4)),
              "other_bbox": b.item(int(j_all[w]), class_map)["bbox"]} for w in worst]
    return finding(len(ious), f"{len(ious)} pairs of same-class boxes with IoU over {threshold:g} on one image",
                   items, n)


def box_findings(files: list[dict], annotations: list[dict], class_map: dict[str, str],
                 check: Check) -> dict[str, dict]:
    """Every box check (detection's `Task.health_findings`); check: the `check` section."""
    b = Boxes(files, annotations)
    return {**box_sizes(b, class_map, check), "boxes_per_image": boxes_per_image(b, check),
            "near_identical_boxes": near_identical(b, class_map, check)}


# --------------------------------------------------------------------------- duplicates and leakage


def duplicate_groups(manifest: dict) -> tuple[str, list[dict]]:
    """(source, groups {"members": [paths], "kind": "exact"|"near", "distance": int, "conflicts": [...]}): the
    manifest's `duplicates` groups (dataset/duplicates.py: members as {"path", "md5", "dhash"}, the links that
    joined them with their dHash distance) when snapshot found them, else exact copies grouped by md5 here (a
    manifest made before duplicates were searched)."""
    given = manifest.get("duplicates")
    if isinstance(given, dict) and isinstance(given.get("groups"), list):
        groups = []
        for g in given["groups"]:
            members = [m["path"] if isinstance(m, dict) else m for m in g.get("members") or []]
            if len(members) > 1:
                distance = max((link.get("distance") or 0 for link in g.get("links") or []), default=0)
                groups.append({**g, "members": members, "distance": g.get("distance", distance)})
        return "manifest", groups
    by_md5: dict[str, list[str]] = defaultdict(list)
    for f in manifest["files"]:
        by_md5[f["md5"]].append(f["path"])
    groups = [{"members": sorted(paths), "kind": "exact", "distance": 0, "md5": md5}
              for md5, paths in by_md5.items() if len(paths) > 1]
    return "md5", sorted(groups, key=lambda g: g["members"])


def duplicates(groups: list[dict], source: str, max_items: int) -> dict:
    extra = sum(len(g["members"]) - 1 for g in groups)
    kinds = {k: sum(1 for g in groups if g.get("kind", "exact") == k) for k in ("exact", "near")}
    items = [{"members": g["members"], "kind": g.get("kind", "exact"), "distance": g.get("distance", 0)}
             for g in sorted(groups, key=lambda g: (-len(g["members"]), g["members"]))]
    return {**finding(len(groups), f"{len(groups)} groups of copies ({kinds['exact']} exact, {kinds['near']} near; "
                                   f"{extra} redundant images; from {source})", items, max_items),
            "exact": kinds["exact"], "near": kinds["near"], "images": extra, "source": source}


def membership(splits: dict | None) -> dict[str, str]:
    """path -> split name, from splits.json."""
    return {p: name for name, paths in ((splits or {}).get("splits") or {}).items() for p in paths}


def leaks(groups: list[dict], split_of: dict[str, str], max_items: int) -> dict:
    """Pairs of copies in different splits: a model is scored on pictures it trained on."""
    pairs = []
    for g in groups:
        for a, b in combinations(g["members"], 2):
            sa, sb = split_of.get(a), split_of.get(b)
            if sa and sb and sa != sb:
                pairs.append({"a": a, "b": b, "splits": [sa, sb], "kind": g.get("kind", "exact")})
    return finding(len(pairs), f"{len(pairs)} pairs of copies in different splits", pairs, max_items, "error")


def conflicts(groups: list[dict], signature: Callable[[str], str | None], max_items: int) -> dict:
    """Pairs of copies labelled differently. A group's own `conflicts` (pairs [a, b] or {"a", "b"}, as the
    duplicates finder lists them, near copies included) are taken as they are; exact groups without one are
    compared here by the task's label signature."""
    pairs = []
    for g in groups:
        if "conflicts" in g:
            for c in g.get("conflicts") or []:
                a, b = (c.get("a"), c.get("b")) if isinstance(c, dict) else (tuple(c) + (None, None))[:2]
                pairs.append({"a": a, "b": b, "kind": g.get("kind", "exact")})
        elif g.get("kind", "exact") == "exact":
            for a, b in combinations(g["members"], 2):
                if signature(a) != signature(b):
                    pairs.append({"a": a, "b": b, "kind": "exact"})
    return finding(len(pairs), f"{len(pairs)} pairs of copies with different labels", pairs, max_items, "error")


def blocking(findings: dict[str, dict]) -> list[str]:
    """One line per pair that `check.policy: strict` refuses a release on."""
    lines = []
    for name in BLOCKING:
        f = findings.get(name) or {}
        for it in f.get("items", []):
            where = f" ({it['splits'][0]} / {it['splits'][1]})" if "splits" in it else ""
            lines.append(f"{name}: {it['a']} = {it['b']}{where}")
        if f.get("count", 0) > len(f.get("items", [])):
            lines.append(f"{name}: ... and {f['count'] - len(f['items'])} more pairs")
    return lines
