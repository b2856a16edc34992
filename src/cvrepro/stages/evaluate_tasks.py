"""evaluate, for segmentation and classification: metrics per split, per class and per
slice (the image attribute `evaluate.slice_key`, e.g. time_of_day), and the val plots.

segmentation: the predicted scores are resized (bilinear) to each image's original size
and compared with its original mask from data/labels, so the numbers do not depend on
`preprocess.size`; pixels equal to `dataset.ignore_index` are not counted.
classification: one prediction per image; the val predictions are also written as
metrics/plots/confusion_val.csv (image_id, actual, predicted) for DVC's confusion plot.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import predict_batches
from ..paths import LABELS_DIR, PLOTS_DIR, PREDICTIONS_GRID
from ..task_eval import classification_scores, confusion, segmentation_scores
from ..visualize import confusion_csv, label_grid, mask_grid
from .preprocess import ProcessedSplit
from .snapshot import read_mask

CONFUSION_VAL = PLOTS_DIR / "confusion_val.csv"


def _slice_values(manifest: dict, key: str | None) -> dict[int, str]:
    """image id -> its value of the slice attribute (images without it are in no slice)."""
    if not key:
        return {}
    return {f["image_id"]: str(f["attributes"][key]) for f in manifest["files"] if key in f.get("attributes", {})}


def segmentation_split(model, data: ProcessedSplit, manifest: dict, class_names: dict[int, str], k: int,
                       ignore_index: int, slice_key: str | None, root: Path, desc: str, grid: int = 0,
                       grid_path: Path | None = None) -> dict:
    names = {0: "background", **class_names}
    by_id = {f["image_id"]: f for f in manifest["files"]}
    slice_of = _slice_values(manifest, slice_key)
    total = np.zeros((k, k), dtype=np.int64)
    per_slice: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((k, k), dtype=np.int64))
    slice_images: dict[str, int] = defaultdict(int)
    shown: list[np.ndarray] = []
    for start, outs in predict_batches(model, data.images, desc=desc):
        for j, out in enumerate(outs):
            image_id = int(data.image_ids[start + j])
            gt = read_mask(root / LABELS_DIR / by_id[image_id]["mask_file"])
            scores = F.interpolate(torch.from_numpy(out["scores"])[None], size=gt.shape, mode="bilinear",
                                   align_corners=False)
            cm = confusion(gt, scores[0].argmax(0).numpy(), k, ignore_index)
            total += cm
            if image_id in slice_of:
                per_slice[slice_of[image_id]] += cm
                slice_images[slice_of[image_id]] += 1
            if len(shown) < grid:
                shown.append(out["mask"].astype(np.uint8))
    metrics = segmentation_scores(total, names)
    if slice_key:
        metrics[slice_key] = {
            value: {"images": slice_images[value],
                    **{m: v for m, v in segmentation_scores(per_slice[value], names).items() if m != "per_class"}}
            for value in sorted(per_slice)
        }
    if shown:
        mask_grid([data.images[i].transpose(1, 2, 0) for i in range(len(shown))],
                  [np.asarray(data.masks[i]) for i in range(len(shown))], shown, names, grid_path,
                  ignore_index=ignore_index)
    return metrics


def classification_split(model, data: ProcessedSplit, manifest: dict, class_names: dict[int, str], k: int,
                         slice_key: str | None, desc: str, grid: int = 0, grid_path: Path | None = None,
                         confusion_path: Path | None = None) -> dict:
    predicted, top = [], []
    for _start, outs in predict_batches(model, data.images, desc=desc):
        for out in outs:
            predicted.append(int(out["label"]))
            top.append(float(out["scores"].max()))
    actual = [int(v) for v in data.labels]
    metrics = classification_scores(confusion(actual, predicted, k), class_names)
    if slice_key:
        slice_of = _slice_values(manifest, slice_key)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, image_id in enumerate(data.image_ids.tolist()):
            if image_id in slice_of:
                groups[slice_of[image_id]].append(i)
        metrics[slice_key] = {
            value: {"images": len(idx), "accuracy": classification_scores(
                confusion([actual[i] for i in idx], [predicted[i] for i in idx], k), class_names)["accuracy"]}
            for value, idx in sorted(groups.items())
        }
    if confusion_path is not None:
        rows = sorted((int(i), class_names[a], class_names.get(p, str(p)))
                      for i, a, p in zip(data.image_ids.tolist(), actual, predicted))
        confusion_csv(rows, confusion_path)
    n = min(grid, len(data))
    if n:
        label_grid([data.images[i].transpose(1, 2, 0) for i in range(n)], actual[:n], predicted[:n], top[:n],
                   class_names, grid_path)
    return metrics


def run_split(task: str, split: str, model, data: ProcessedSplit, manifest: dict, class_names: dict[int, str],
              spec: dict, cfg: dict, root: Path) -> dict:
    """Metrics of one split; for val also the prediction grid (and the confusion CSV)."""
    val = split == "val"
    grid = int(cfg["grid_images"]) if val else 0
    k = int(spec["num_classes"])
    if task == "segmentation":
        return segmentation_split(model, data, manifest, class_names, k, int(spec.get("ignore_index", 255)),
                                  cfg.get("slice_key"), root, f"predict {split}", grid, root / PREDICTIONS_GRID)
    return classification_split(model, data, manifest, class_names, k, cfg.get("slice_key"), f"predict {split}",
                                grid, root / PREDICTIONS_GRID, root / CONFUSION_VAL if val else None)
