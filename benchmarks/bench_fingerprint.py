"""Benchmark the dataset fingerprint against parsing the labels it is computed from.

    .venv/bin/python benchmarks/bench_fingerprint.py [--boxes N] [--repeat R] [--json]

Builds a synthetic COCO index in memory (N boxes, 3 an image, 3 classes, 640x480 images), then times, in this
one process and interleaved, best of R:

  (a) baseline: what snapshot does to the labels anyway: parse the JSON text, check categories, images and
      every box (dataset.index + the detection task's parse_labels);
  (b) dataset.fingerprint.fingerprint on the parsed images: image sizes, box sizes per class, percentiles.

The ratio (b)/(a) is what the fingerprint adds to snapshot's label side (the manifest's `fingerprint` key);
the baseline runs in the same process on the same index, so the ratio carries across machines better than
the times. No image is opened by either.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from cvrepro import tasks
from cvrepro.core.problems import Problems
from cvrepro.dataset.fingerprint import fingerprint
from cvrepro.dataset.index import BoxCheck, load_coco, parse_categories, parse_images


def make_index(boxes: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    images, anns = [], []
    for i in range(boxes // 3):
        images.append({"id": i + 1, "file_name": f"img_{i:06d}.jpg", "width": 640, "height": 480})
        for _ in range(3):
            w, h = rng.uniform(8, 200), rng.uniform(8, 200)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": rng.randint(1, 3),
                         "bbox": [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h], "iscrowd": 0})
    return json.dumps({"images": images, "annotations": anns,
                       "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]})


def parse(text: str, task) -> tuple[list[dict], dict]:
    path, problems = Path("annotations.json"), Problems()
    images_raw, anns, cats = load_coco(path, text, problems)
    class_map = parse_categories(cats, path, problems)
    images = parse_images(images_raw, path, problems)
    by_image = task.parse_labels(anns, images, class_map, path, problems, set(), BoxCheck("fail"))
    problems.raise_if_any()
    files = list(images.values())
    for f in files:
        f["annotations"] = by_image.get(f["id"], [])
    return files, class_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boxes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    task = tasks.get("detection")
    text = make_index(args.boxes)
    best_parse = best_fp = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        files, class_map = parse(text, task)
        t1 = time.perf_counter()
        fp = fingerprint(files, class_map, task)
        t2 = time.perf_counter()
        best_parse, best_fp = min(best_parse, t1 - t0), min(best_fp, t2 - t1)
    assert fp["all_objects"]["side"]["n"] == args.boxes // 3 * 3
    result = {"boxes": args.boxes // 3 * 3, "parse_s": round(best_parse, 3), "fingerprint_s": round(best_fp, 3),
              "ratio_fingerprint_over_parse": round(best_fp / best_parse, 3), "python": platform.python_version()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['boxes']} boxes: parse {best_parse:.3f} s, fingerprint {best_fp:.3f} s "
              f"(ratio {result['ratio_fingerprint_over_parse']:.3f} of parsing the labels)")


if __name__ == "__main__":
    main()
