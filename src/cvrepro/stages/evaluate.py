"""evaluate: COCO box metrics (pycocotools) on val and test, per class and per
slice (e.g. time_of_day), latency, a precision-recall plot, a grid of predictions
over val images, and the run's lineage record. Segmentation and classification
metrics come from evaluate_tasks; latency and the lineage record are shared."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..coco_eval import coco_metrics, slice_ids
from ..engine import predict, to_tensor
from ..io import read_json, write_json
from ..lineage import build_lineage
from ..paths import (LABEL_MAP, LINEAGE, MANIFEST, METRICS, MODELS_DIR, PREDICTIONS_GRID,
                     PREPROCESSING, PROCESSED_DIR, PLOTS_DIR, TRAIN_INFO, WEIGHTS, processed_split)
from . import evaluate_tasks
from .preprocess import ProcessedSplit
from .snapshot import annotations_file
from .train import load_predictor
from ..visualize import prediction_grid, pr_curves_csv

HEADLINE = ("AP", "AP50", "AP75", "AR100")
TASK_PLOTS = (PLOTS_DIR / "pr_val.csv", evaluate_tasks.CONFUSION_VAL)  # detection's, classification's


def known_labels_only(preds: list[dict], class_names: dict[int, str]) -> list[dict]:
    """Drop detections of ids outside the class map. Labels are category ids, so the
    head has outputs for unused ids (0, gaps): they never see a positive and score
    low, but are not classes."""
    known = np.array(sorted(class_names))
    return [{k: v[np.isin(p["labels"], known)] for k, v in p.items()} for p in preds]


def coco_detections(preds: list[dict], data: ProcessedSplit) -> list[dict]:
    """Predictions mapped back to original image pixels, as COCO results."""
    dets = []
    for i, det in enumerate(preds):
        sx, sy = (float(s) for s in data.scales[i])
        for (x1, y1, x2, y2), score, label in zip(det["boxes"], det["scores"], det["labels"]):
            dets.append({"image_id": int(data.image_ids[i]), "category_id": int(label), "score": float(score),
                         "bbox": [x1 / sx, y1 / sy, (x2 - x1) / sx, (y2 - y1) / sy]})
    return dets


def split_metrics(coco: dict, dets: list[dict], ids: list[int], class_names: dict, slices: dict) -> dict:
    full = coco_metrics(coco, dets, ids, class_names)
    out = {k: full[k] for k in HEADLINE}
    out["per_class"] = {name: {k: v[k] for k in ("AP", "AP50", "AP75")} for name, v in full["per_class"].items()}
    for key, groups in slices.items():
        out[key] = {}
        for value, group_ids in groups.items():
            members = sorted(set(ids) & set(group_ids))
            m = coco_metrics(coco, dets, members, class_names)
            out[key][str(value)] = {"images": len(members), **{k: m[k] for k in ("AP", "AP50", "AP75")}}
    return out, full["pr_curve"]


@torch.no_grad()
def latency_ms(model, images: np.ndarray, n: int) -> float | None:
    """Mean wall time of one-image predictions (after one warm-up call)."""
    n = min(n, len(images))
    if n == 0:
        return None
    model(([to_tensor(images[0])]))
    start = time.perf_counter()
    for i in range(n):
        model([to_tensor(images[i])])
    return round((time.perf_counter() - start) / n * 1000, 3)


def run(params: dict, root: Path = Path(".")) -> dict:
    cfg = params["evaluate"]
    torch.set_num_threads(int(params["train"]["threads"]))
    model, spec, label_map = load_predictor(root / MODELS_DIR)
    class_names = {int(k): v for k, v in label_map.items()}
    task = spec.get("task", "detection")
    manifest = read_json(root / MANIFEST)
    for stale in TASK_PLOTS:  # a plot left by another task's run would pass for this one's (dvc repro clears them too)
        (root / stale).unlink(missing_ok=True)
    metrics: dict = {}
    if task != "detection":
        for split in cfg["splits"]:
            data = ProcessedSplit(root / processed_split(split))
            metrics[split] = evaluate_tasks.run_split(task, split, model, data, manifest, class_names, spec, cfg, root)
            if split == "val":
                metrics["latency_ms"] = latency_ms(model, data.images, int(cfg["latency_images"]))
        return _finish(params, root, manifest, metrics)

    coco = read_json(root / annotations_file(params))
    slices = {cfg["slice_key"]: slice_ids(coco, cfg["slice_key"])} if cfg.get("slice_key") else {}
    for split in cfg["splits"]:
        data = ProcessedSplit(root / processed_split(split))
        preds = known_labels_only(predict(model, data.images, desc=f"predict {split}"), class_names)
        metrics[split], pr_curve = split_metrics(coco, coco_detections(preds, data), data.image_ids.tolist(),
                                                 class_names, slices)
        if split == "val":
            pr_curves_csv(pr_curve, root / PLOTS_DIR / "pr_val.csv")
            n = min(int(cfg["grid_images"]), len(data))
            prediction_grid([data.images[i].transpose(1, 2, 0) for i in range(n)],
                            [dict(zip(("boxes", "labels"), data.target(i))) for i in range(n)],
                            preds[:n], class_names, root / PREDICTIONS_GRID,
                            score_threshold=float(cfg["grid_score_threshold"]))
            metrics["latency_ms"] = latency_ms(model, data.images, int(cfg["latency_images"]))
    return _finish(params, root, manifest, metrics)


def _finish(params: dict, root: Path, manifest: dict, metrics: dict) -> dict:
    """Write metrics.json and the run's lineage record."""
    write_json(root / METRICS, metrics)
    lineage = build_lineage(
        root, params, manifest, metrics,
        artifacts=[WEIGHTS, LABEL_MAP, PREPROCESSING, PROCESSED_DIR, MANIFEST],
        seeds={"split": int(params["split"]["seed"]), "train": int(params["train"]["seed"])},
        extra={"train": read_json(root / TRAIN_INFO)},
        # Stage outputs that dvc repro is rewriting right now do not make the *code* dirty.
        git_exclude=["dvc.lock", "metrics", "models/train.json"],
    )
    lineage["preflight"] = lineage.get("extra", {}).get("train", {}).get("preflight")  # warn policy: failures live here
    write_json(root / LINEAGE, lineage)
    return metrics
