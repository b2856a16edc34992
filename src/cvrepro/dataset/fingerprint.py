"""The dataset fingerprint: the few numbers that decide how a dataset should be resized and which
detector settings suit it (nnU-Net's self-configuration idea): image sizes, object sizes per class,
objects per image, class counts, and for segmentation the area each class covers.

Computed from the labels index alone (the declared `width`/`height` of each image, which snapshot checks
against the file's header; no pixel is decoded), so it costs a small fraction of parsing the labels
(benchmarks/bench_fingerprint.py). The shared part is here; what a task's labels add (box sizes, mask
areas) comes from its `Task.fingerprint_labels` hook. Snapshot stores it under the manifest's
`fingerprint` key, outside what `snapshot_id` hashes; `tasks/defaults.py` chooses settings from it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from cvrepro.config.params import IGNORE_INDEX
from cvrepro.core.fileio import json_text, read_bytes
from cvrepro.core.problems import Problems

SCHEMA = "cvrepro.fingerprint/1"
QUANTILES = (5, 10, 25, 50, 75, 95)


def percentiles(values: Iterable[float] | np.ndarray) -> dict:
    """{n, min, p5, p10, p25, p50, p75, p95, max} of the values (rounded to 0.1; 4 digits below 1), {n: 0}
    when there are none. Linear interpolation, numpy's default: a fixture's figures are checkable by hand."""
    a = np.sort(np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64))
    if a.size == 0:
        return {"n": 0}
    at = np.array(QUANTILES) / 100 * (a.size - 1)  # one sort, then numpy's linear rule by hand: 5x faster
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, a.size - 1)
    q = a[lo] + (a[hi] - a[lo]) * (at - lo)
    out = {"n": int(a.size), "min": _round(a[0])}
    out.update({f"p{k}": _round(v) for k, v in zip(QUANTILES, q)})
    out["max"] = _round(a[-1])
    return out


def _round(v: float) -> float:
    v = float(v)
    return round(v, 4) if abs(v) < 1 else round(v, 1)


def image_part(files: list[dict]) -> dict:
    """Sizes of the images, in pixels: width, height, the longer side and the aspect ratio (width/height)."""
    w = np.fromiter((f["width"] for f in files), dtype=np.float64, count=len(files))
    h = np.fromiter((f["height"] for f in files), dtype=np.float64, count=len(files))
    return {"count": len(files), "width": percentiles(w), "height": percentiles(h),
            "long_side": percentiles(np.maximum(w, h)), "aspect": percentiles(w / np.maximum(h, 1))}


def fingerprint(files: list[dict], class_map: dict[int, str], task) -> dict:
    """The fingerprint of parsed images: each a dict with `width`, `height` and `annotations` (what
    `task.objects` returns), plus what the task's hook reads (segmentation: `pixels`)."""
    ids = Counter(a["category_id"] for f in files for a in f["annotations"])
    per_class = {name: ids.get(cid, 0) for cid, name in class_map.items()}
    return {
        "schema": SCHEMA,
        "task": task.name,
        "images": image_part(files),
        "classes": per_class,
        "objects_per_image": percentiles([len(f["annotations"]) for f in files]),
        **task.fingerprint_labels(files, class_map),
    }


def from_index(ann_path: Path, task, invalid: str = "fail", ignore_index: int = IGNORE_INDEX) -> dict:
    """The fingerprint of a labels index as snapshot would read it (the same checks: a bad index is one
    CvreproError naming the file and field), without opening the images."""
    from cvrepro.dataset.index import BoxCheck, load_coco, parse_categories, parse_images, rejected_ids

    ann_path = Path(ann_path)
    problems = Problems()
    images_raw, annotations_raw, categories_raw = load_coco(ann_path, json_text(ann_path, read_bytes(ann_path)),
                                                            problems, task.annotations_required)
    class_map = parse_categories(categories_raw, ann_path, problems)
    images = parse_images(images_raw, ann_path, problems)
    rejected = {(i, "image") for i in rejected_ids(images_raw, images)}
    rejected |= {(i, "category") for i in rejected_ids(categories_raw, class_map)}
    by_image = task.parse_labels(annotations_raw, images, class_map, ann_path, problems, rejected,
                                 BoxCheck(invalid, "dataset.invalid"))
    files = sorted(images.values(), key=lambda im: im["path"])
    if not task.labels_in_index:  # labels in files of their own (masks): read them, as snapshot does
        task.check_labels_on_disk(files, ann_path.parent, ann_path, class_map, ignore_index, problems)
    problems.raise_if_any()
    for f in files:
        f["annotations"] = task.objects(f, by_image.pop(f["id"], []), class_map)
    return fingerprint(files, class_map, task)


def summary_lines(fp: dict) -> list[str]:
    """A few readable lines (release notes, `cvrepro fingerprint`)."""
    im = fp["images"]
    lines = [f"- images: {im['count']}, long side p50 {im['long_side'].get('p50')} px "
             f"(p5 {im['long_side'].get('p5')}, p95 {im['long_side'].get('p95')}), "
             f"aspect w/h p5..p95 {im['aspect'].get('p5')}..{im['aspect'].get('p95')}",
             f"- objects per image: p50 {fp['objects_per_image'].get('p50')}, "
             f"p95 {fp['objects_per_image'].get('p95')}"]
    for name, s in (fp.get("object_size") or {}).items():
        side = s["side"]
        if side.get("n"):
            lines.append(f"- {name}: {side['n']} objects, side (sqrt area) p10 {side['p10']} px, "
                         f"p50 {side['p50']} px, p95 {side['p95']} px")
    for name, s in (fp.get("mask_area") or {}).items():
        if s["side"].get("n"):
            lines.append(f"- {name}: in {s['side']['n']} masks, side (sqrt area) p50 {s['side']['p50']} px, "
                         f"{s['fraction']:.2%} of all pixels")
    return lines
