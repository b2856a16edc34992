"""A small demo dataset given one case of every `cvrepro check` finding (tests/test_check.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cvrepro.dataset.demo import generate_demo

IMAGES = 20
W, H = 160, 120  # the demo's image size


def _box(ann_id: int, image_id: int, category: int, bbox: list[float]) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": 0}


def make_unhealthy(root: Path, leak: bool = True) -> dict:
    """The demo (20 images) plus: a doubled box (image 1), a tiny one (2), a huge one (3), a 15:1 one (4),
    40 boxes on image 5, no labels on image 6, an exact copy of image 7 (`copy_7.png`; subset train / test
    when `leak`, so `split.method: subset` puts them apart) and a copy of image 8 labelled otherwise
    (`copy_8.png`, both in test; the other images split by the hash). Returns the facts the tests check against."""
    generate_demo(root, seed=3, n_images=IMAGES)
    path = root / "data/labels/annotations.json"
    coco = json.loads(path.read_text())
    anns, images = coco["annotations"], {im["id"]: im for im in coco["images"]}
    next_id = max(a["id"] for a in anns) + 1
    first = {i: next(a for a in anns if a["image_id"] == i) for i in (1, 7, 8)}
    x, y, w, h = first[1]["bbox"]
    extra = [_box(next_id, 1, first[1]["category_id"], [x + 0.5, y, w, h]),
             _box(next_id + 1, 2, 1, [10.0, 10.0, 1.0, 1.0]),
             _box(next_id + 2, 3, 2, [0.0, 0.0, float(W), float(H)]),
             _box(next_id + 3, 4, 3, [5.0, 50.0, 90.0, 6.0])]
    extra += [_box(next_id + 4 + k, 5, 1, [float(10 * (k % 10) + 2), float(25 * (k // 10) + 2), 6.0, 6.0])
              for k in range(40)]
    anns = [a for a in anns if a["image_id"] != 6] + extra
    for image_id, name, subsets in ((7, "copy_7.png", ("train", "test" if leak else "train")),
                                    (8, "copy_8.png", ("test", "test"))):
        src = images[image_id]
        shutil.copyfile(root / "data/raw" / src["file_name"], root / "data/raw" / name)
        new_id = max(images) + 1
        images[new_id] = {**src, "id": new_id, "file_name": name, "subset": subsets[1]}
        src["subset"] = subsets[0]
        for a in [a for a in anns if a["image_id"] == image_id]:
            next_id = max(b["id"] for b in anns) + 1
            relabel = image_id == 8 and a is first[8]
            anns.append({**a, "id": next_id, "image_id": new_id,
                         "category_id": a["category_id"] % 3 + 1 if relabel else a["category_id"]})
    coco["annotations"], coco["images"] = anns, list(images.values())
    path.write_text(json.dumps(coco, indent=1))
    names = {i: images[i]["file_name"] for i in (1, 2, 3, 4, 5, 6, 7, 8)}
    return {"names": names, "leak": ("copy_7.png", names[7]), "conflict": ("copy_8.png", names[8])}
