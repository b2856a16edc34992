"""Known label mistakes injected into a COCO index, and how well a ranked issue list finds them.

Detection: a share of the boxes removed (the list should add them back), given another class, shifted by
35-60% of their size along one axis, and new boxes put on background. Classification: a share of labels
flipped to another class. Every choice comes from `seed`.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np

from cvrepro.tasks.issues import box_iou

KIND_REASON = {"removed": "missing", "swapped": "wrong_class", "shifted": "misplaced", "background": "spurious"}


def _xyxy(b) -> list[float]:
    x, y, w, h = b
    return [x, y, x + w, y + h]


def _shift(box, width, height, rng) -> list[float] | None:
    x, y, w, h = box
    axis, sign = int(rng.integers(2)), (1 if rng.random() < 0.5 else -1)
    f = rng.uniform(0.35, 0.6)
    for s in (sign, -sign):
        nx, ny = (x + s * f * w, y) if axis == 0 else (x, y + s * f * h)
        if nx >= 0 and ny >= 0 and nx + w <= width and ny + h <= height:
            return [round(nx, 2), round(ny, 2), w, h]
    return None


def _background_box(image, boxes: list, sizes: list, rng) -> list[float] | None:
    """A box of a real box's size that overlaps no box of the image."""
    for _ in range(200):
        w, h = sizes[int(rng.integers(len(sizes)))]
        if w >= image["width"] or h >= image["height"]:
            continue
        x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
        cand = [round(x, 2), round(y, 2), w, h]
        if not boxes or box_iou(np.array([_xyxy(cand)]), np.array([_xyxy(b) for b in boxes])).max() == 0:
            return cand
    return None


def inject_detection_errors(coco: dict, share: float = 0.05, seed: int = 0) -> tuple[dict, dict]:
    """(corrupted copy, truth). truth: removed [(file_name, box xywh)], swapped/shifted/background [ann ids]."""
    rng = np.random.default_rng(seed)
    new = copy.deepcopy(coco)
    anns, images = new["annotations"], {im["id"]: im for im in new["images"]}
    cats = sorted(c["id"] for c in new["categories"])
    n = max(1, round(share * len(anns)))
    order = [anns[i] for i in rng.permutation(len(anns))]
    removed, swapped, shifted = order[:n], order[n:2 * n], []
    for a in swapped:
        a["category_id"] = int(rng.choice([c for c in cats if c != a["category_id"]]))
    for a in order[2 * n:]:
        if len(shifted) == n:
            break
        im = images[a["image_id"]]
        moved = _shift(a["bbox"], im["width"], im["height"], rng)
        if moved:
            a["bbox"], a["area"] = moved, round(moved[2] * moved[3], 2)
            shifted.append(a)
    gone = {a["id"] for a in removed}
    new["annotations"] = [a for a in anns if a["id"] not in gone]
    sizes = [a["bbox"][2:] for a in coco["annotations"]]
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:  # the true boxes: a background box must not sit on a removed one either
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    next_id, background = max(a["id"] for a in coco["annotations"]) + 1, []
    for image_id in rng.permutation(sorted(images)):
        if len(background) == n:
            break
        box = _background_box(images[int(image_id)], by_image.get(int(image_id), []), sizes, rng)
        if box:
            new["annotations"].append({"id": next_id, "image_id": int(image_id), "category_id": int(rng.choice(cats)),
                                       "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0})
            background.append(next_id)
            next_id += 1
    truth = {"removed": [(images[a["image_id"]]["file_name"], a["bbox"]) for a in removed],
             "swapped": [a["id"] for a in swapped], "shifted": [a["id"] for a in shifted], "background": background}
    return new, truth


def flip_labels(index: dict, share: float = 0.05, seed: int = 0) -> tuple[dict, list[int]]:
    """Classification: (copy with `share` of the labels changed to another class, the changed annotation ids)."""
    rng = np.random.default_rng(seed)
    new = copy.deepcopy(index)
    cats = sorted(c["id"] for c in new["categories"])
    anns = new["annotations"]
    flipped = [anns[i] for i in rng.permutation(len(anns))[: max(1, round(share * len(anns)))]]
    for a in flipped:
        a["category_id"] = int(rng.choice([c for c in cats if c != a["category_id"]]))
    return new, sorted(a["id"] for a in flipped)


def read_issues(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def _hit(kind: str, row: dict, truth_item) -> bool:
    if kind == "removed":
        name, box = truth_item
        if row["image"] != name or row["action"] != "add":
            return False
        found = [float(row[k]) for k in ("x", "y", "w", "h")]
        return box_iou(np.array([_xyxy(found)]), np.array([_xyxy(box)]))[0, 0] >= 0.3
    return row["annotation_id"] == str(truth_item)


def precision_recall(rows: list[dict], truth: list, kind: str, reason: str | None) -> dict:
    """Precision in the top K and recall in the top 2K (K = len(truth)) of the rows of `reason` (all rows: None),
    in the list's order; each injected mistake counts once."""
    ranked = [r for r in rows if reason is None or r["reason"].split(":")[0] == reason]
    k = len(truth)

    def found(top: list[dict]) -> tuple[int, int]:
        hits_rows, seen = 0, set()
        for r in top:
            match = next((j for j, t in enumerate(truth) if j not in seen and _hit(kind, r, t)), None)
            if match is not None:
                seen.add(match)
                hits_rows += 1
        return hits_rows, len(seen)

    top_k_hits, _ = found(ranked[:k])
    _, recalled = found(ranked[: 2 * k])
    return {"injected": k, "listed": len(ranked), "precision_at_k": top_k_hits / k if k else 1.0,
            "recall_at_2k": recalled / k if k else 1.0}


def measure(root: Path, task: str, n_images: int, overrides: list[str], share: float = 0.05,
            seed: int = 0) -> dict:
    """Generate the demo (n_images), inject mistakes, run snapshot .. train and label-issues as `overrides`
    compose them (from the template's conf/), and score the list: per kind, and the seconds of train and of
    the label-issues run."""
    import subprocess
    import time

    from cvrepro.config.compose import compose
    from cvrepro.core.fileio import read_json, write_json
    from cvrepro.dataset.demo import generate_demo
    from cvrepro.dataset.index import annotations_file
    from cvrepro.learning import label_issues
    from cvrepro.stages import preprocess, snapshot, split, train

    from helpers import REPO

    params = compose(REPO / "conf", [f"task={task}", *overrides])
    generate_demo(root, seed=3, n_images=n_images)
    index_path = root / annotations_file(params)
    index = read_json(index_path)
    if task == "classification":
        corrupted, flipped = flip_labels(index, share, seed)
        truth = {"flipped": flipped}
    else:
        corrupted, truth = inject_detection_errors(index, share, seed)
    write_json(index_path, corrupted)
    subprocess.run("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm data",
                   shell=True, cwd=root, check=True, stdout=subprocess.DEVNULL)
    for stage in (snapshot, split, preprocess):
        stage.run(params, root)
    started = time.perf_counter()
    train.run(params, root)
    seconds = {"train": time.perf_counter() - started}
    started = time.perf_counter()
    kept: list = []
    summary = label_issues.run(params, root, keep=kept)
    seconds["label_issues"] = time.perf_counter() - started
    rows = read_issues(root / label_issues.OUT_DIR / label_issues.CSV_NAME)
    if task == "classification":
        scores = {"flipped": precision_recall(rows, [(a) for a in flipped], "flipped", None)}
    else:
        scores = {kind: precision_recall(rows, truth[kind], kind, KIND_REASON[kind]) for kind in KIND_REASON}
        scores["overall"] = {kind: precision_recall(rows, truth[kind], kind, None)["recall_at_2k"]
                             for kind in KIND_REASON}
    return {"scores": scores, "seconds": seconds, "summary": summary, "truth": truth, "collector": kept[0]}
