"""Benchmark the dataset diff behind `cvrepro release dataset` and `cvrepro diff`.

    .venv/bin/python benchmarks/bench_datadiff.py [--images N] [--edited F] [--repeat R] [--json]

Builds two synthetic dataset states in memory (N images, 3 boxes each, the second
with a fraction F of the images given label fixes: one box moved, one relabelled),
then times, in this one process and interleaved, best of R:

  (a) baseline: box matching (by id, then IoU) on every image the two versions share;
  (b) datadiff.dataset_diff: matches boxes only on images whose manifest labels_hash
      differs, and compares everything else by hash.

Both must report the same box counts, or the benchmark fails. The ratio (a)/(b) is
the speed-up of gating by labels_hash; the baseline runs in the same process on
the same states, so the ratio carries across machines better than the times.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import random
from collections import Counter

from cvrepro import tasks
from cvrepro.dataset.diff import DatasetState, _labels_by_path, dataset_diff, match_labels
from cvrepro.core.fileio import canonical_json

from timing import best


def make_state(n: int, seed: int) -> DatasetState:
    rng = random.Random(seed)
    images, anns = [], []
    for i in range(n):
        images.append({"id": i + 1, "file_name": f"img_{i:06d}.png", "width": 640, "height": 480})
        for _ in range(3):
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": rng.randint(1, 3),
                         "bbox": [x, y, rng.uniform(10, 130), rng.uniform(10, 120)], "area": 1.0, "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]}
    return DatasetState("synthetic", manifest_of(coco), coco, None)


def manifest_of(coco: dict) -> dict:
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    files = [{"path": im["file_name"], "image_id": im["id"], "md5": hashlib.md5(im["file_name"].encode()).hexdigest(),
              "attributes": {}, "labels_hash": hashlib.sha256(canonical_json(by_image.get(im["id"], [])).encode()).hexdigest()}
             for im in coco["images"]]
    per_class = Counter(f"c{a['category_id']}" for a in coco["annotations"])
    return {"schema": "cvrepro.manifest/1", "task": "detection", "snapshot_id": "sha256:x",
            "class_map": {"1": "c1", "2": "c2", "3": "c3"}, "files": files, "stats": {"per_class": dict(per_class)}}


def edited(state: DatasetState, fraction: float, seed: int) -> DatasetState:
    rng = random.Random(seed)
    coco = copy.deepcopy(state.annotations)
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for image_id in rng.sample(sorted(by_image), int(len(by_image) * fraction)):
        first, second = by_image[image_id][:2]
        first["bbox"][0] += 2.0
        second["category_id"] = 1 + second["category_id"] % 3
    return DatasetState("edited", manifest_of(coco), coco, None)


def baseline(old: DatasetState, new: DatasetState) -> dict:
    olabels, nlabels = _labels_by_path(old), _labels_by_path(new)
    counts = Counter()
    for path in sorted(set(olabels) & set(nlabels)):
        pairs, removed, added = match_labels(olabels[path], nlabels[path])
        counts["added"] += len(added)
        counts["removed"] += len(removed)
        for a, b in pairs:
            counts["relabelled"] += a["category_id"] != b["category_id"]
            counts["moved"] += a["bbox"] != b["bbox"]
    return {k: counts[k] for k in ("added", "removed", "moved", "relabelled")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--edited", type=float, default=0.01, help="fraction of images with label fixes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    old = make_state(args.images, seed=0)
    new = edited(old, args.edited, seed=1)
    t_base, counts = best(lambda: baseline(old, new), args.repeat)
    t_diff, diff = best(lambda: dataset_diff(old, new, tasks.of_manifest), args.repeat)
    if diff["labels"]["boxes"] != counts:
        raise SystemExit(f"mismatch: dataset_diff {diff['labels']['boxes']} vs baseline {counts}")
    result = {"images": args.images, "edited_fraction": args.edited, "boxes": counts,
              "baseline_s": round(t_base, 4), "dataset_diff_s": round(t_diff, 4),
              "speedup": round(t_base / t_diff, 2), "required_bump": diff["required_bump"],
              "python": platform.python_version(), "machine": platform.machine()}
    if not args.json:
        print(f"{args.images} images, {args.edited:.0%} with label fixes: baseline (match every image) "
              f"{t_base:.3f} s, dataset_diff (labels_hash-gated) {t_diff:.3f} s -> {t_base / t_diff:.1f}x; "
              f"bump {diff['required_bump']}, boxes {counts}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
