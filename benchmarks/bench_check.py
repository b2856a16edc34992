"""Benchmark `cvrepro check` at 100k annotations against reading the labels.

    .venv/bin/python benchmarks/bench_check.py [--annotations N] [--per-image K] [--repeat R] [--json]

Writes a synthetic detection project into a temporary folder: N / K images of 640x480 with K boxes
each over 3 classes (a few boxes doubled, tiny, huge or thin; 1% of the images exact copies, some
across splits), its manifest, labels index and splits.json. Then times, in this process and
interleaved, best of R:

  (a) baseline: `json.load` of the labels index, the least any tool reading the labels must do;
  (a') `json.load` of all three inputs (manifest, splits, labels): what is left is the checks' own work;
  (b) `cvrepro check`'s work: load manifest, labels and splits, then every finding
      (provenance.check.load_workspace + gather), text rendered.

The ratio (b)/(a) says how many label reads a full health check costs; it carries across machines
better than the seconds. The run fails unless the planted cases are all found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import tempfile
from pathlib import Path

from cvrepro.config.compose import compose
from cvrepro.provenance import check

from timing import best

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"1": "person", "2": "cart", "3": "shelf"}


def build(root: Path, annotations: int, per_image: int, seed: int) -> dict:
    """The project's manifest, labels index and splits.json; returns what was planted."""
    rng = random.Random(seed)
    n = annotations // per_image
    images, anns, files, planted = [], [], [], {"doubled": 0, "tiny": 0, "copies": 0}
    for i in range(1, n + 1):
        copy = i > 1 and i % 100 == 0  # an exact copy of the image before it
        md5 = files[-1]["md5"] if copy else hashlib.md5(str(i).encode()).hexdigest()
        planted["copies"] += copy
        path = f"img_{i:07d}.png"
        images.append({"id": i, "file_name": path, "width": 640, "height": 480})
        for k in range(per_image):
            box = [rng.uniform(0, 500), rng.uniform(0, 350), rng.uniform(12, 130), rng.uniform(12, 120)]
            if i % 97 == 0 and k == 0:
                box[2] = box[3] = 1.0
                planted["tiny"] += 1
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": rng.randint(1, 3), "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            if i % 89 == 0 and i % 97 and k == 0:  # a box labelled twice (not a tiny one)
                anns.append({**anns[-1], "id": len(anns) + 1, "bbox": [box[0] + 0.5, *box[1:]]})
                planted["doubled"] += 1
        files.append({"path": path, "image_id": i, "md5": md5, "size": 1000, "width": 640, "height": 480,
                      "attributes": {}, "labels_hash": "x", "objects": per_image})
    per_class = {name: sum(1 for a in anns if str(a["category_id"]) == k) for k, name in CLASSES.items()}
    manifest = {"schema": "cvrepro.manifest/1", "task": "detection", "snapshot_id": "sha256:bench",
                "class_map": CLASSES, "files": files,
                "stats": {"images": n, "objects": len(anns), "per_class": per_class}}
    splits = {"splits": {"train": [], "val": [], "test": []}}
    for f in files:
        splits["splits"][rng.choice(("train", "train", "val", "test"))].append(f["path"])
    for rel, obj in (("data/snapshot/manifest.json", manifest), ("data/splits/splits.json", splits),
                     ("data/labels/annotations.json", {"images": images, "annotations": anns,
                                                       "categories": [{"id": int(k), "name": v}
                                                                      for k, v in CLASSES.items()]})):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(obj))
    return {**planted, "images": n, "annotations": len(anns)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", type=int, default=100_000)
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    params = compose(REPO / "conf")
    cfg = check.settings(params)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        planted = build(root, args.annotations, args.per_image, args.seed)
        labels = root / "data/labels/annotations.json"

        def run_check() -> dict:
            report = check.gather(*check.load_workspace(root, params), cfg, root)
            check.render_text(report)
            return report

        inputs = [root / "data/snapshot/manifest.json", root / "data/splits/splits.json", labels]
        t_base = t_inputs = t_check = float("inf")
        for _ in range(args.repeat):  # interleaved: load on a shared machine hits all alike
            t_base = min(t_base, best(lambda: json.loads(labels.read_text()), 1)[0])
            t_inputs = min(t_inputs, best(lambda: [json.loads(p.read_text()) for p in inputs], 1)[0])
            t, report = best(run_check, 1)
            t_check = min(t_check, t)
    f = report["findings"]
    found = {"doubled": f["near_identical_boxes"]["count"], "tiny": f["tiny_boxes"]["count"],
             "copies": f["duplicates"]["images"]}
    if any(found[k] != planted[k] for k in found):
        raise SystemExit(f"planted {planted} but found {found}")
    result = {**planted, "found": found, "leaks": f["leakage"]["count"], "baseline_json_s": round(t_base, 4),
              "inputs_json_s": round(t_inputs, 4), "check_s": round(t_check, 4), "ratio": round(t_check / t_base, 2),
              "ratio_to_inputs": round(t_check / t_inputs, 2),
              "python": platform.python_version(), "machine": platform.machine()}
    if not args.json:
        print(f"{planted['annotations']} annotations on {planted['images']} images: json.load of the labels "
              f"{t_base:.3f} s, cvrepro check {t_check:.3f} s -> {t_check / t_base:.2f}x a label read "
              f"({t_check / t_inputs:.2f}x reading all three inputs, {t_inputs:.3f} s; best of {args.repeat}); "
              f"found {found}, {f['leakage']['count']} leaking pairs")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
