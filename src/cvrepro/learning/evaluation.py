"""Evaluation: the trained model on each split of `evaluate.splits`, on `train.device`, scored by its task
(`Task.evaluate_split`: metrics overall, per class and per slice; the val plots and the
prediction grid), plus the mean latency of one-image predictions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cvrepro import tasks
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json
from cvrepro.core.paths import MANIFEST, MODELS_DIR, PREDICTIONS_GRID, PREPROCESSING, processed_split
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.learning.artifacts import load_predictor
from cvrepro.learning.devices import resolve_device
from cvrepro.learning.engine import model_device, to_tensor


@torch.no_grad()
def latency_ms(model, images: np.ndarray, n: int) -> float | None:
    """Mean wall time of one-image predictions (after one warm-up call)."""
    n = min(n, len(images))
    if n == 0:
        return None
    device = model_device(model)
    model(([to_tensor(images[0]).to(device)]))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(n):
        model([to_tensor(images[i]).to(device)])
    sync()
    return round((time.perf_counter() - start) / n * 1000, 3)


def evaluate(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Metrics of models/ on the processed splits; writes the val plots under metrics/plots."""
    cfg = typed(params)
    torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)  # the device training used
    model, spec, label_map = load_predictor(root / MODELS_DIR, device)
    task = tasks.of_record(spec, str(PREPROCESSING))
    for other in map(tasks.get, tasks.names()):  # a plot left by another task's run would pass for this one's
        for stale in other.plots:
            (root / stale).unlink(missing_ok=True)
    ctx = {"root": root, "params": cfg, "cfg": cfg.evaluate, "manifest": read_json(root / MANIFEST),
           "spec": spec, "class_names": {int(k): v for k, v in label_map.items()}}
    metrics: dict = {}
    for split in cfg.evaluate.splits:
        data = ProcessedSplit(root / processed_split(split))
        ctx["grid_path"] = root / PREDICTIONS_GRID if split == "val" else None
        metrics[split] = task.evaluate_split(split, model, data, ctx)
        if split == "val":
            metrics["latency_ms"] = latency_ms(model, data.images, cfg.evaluate.latency_images)
    return metrics
