"""train: fit the model chosen by `model.name` (a detector, segmenter or classifier,
per `task`) on the processed train split.

Deterministic on the CPU: the same inputs, seed and `train.threads` give
bit-identical weights. Writes the weights (state_dict), a checkpoint (model,
optimizer, scheduler, epoch, resolved config, class map), the label map, the
pre/post-processing a predictor needs, and per-epoch losses through DVCLive.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..engine import TRAIN_SETS, make_loader, recalibrate_batchnorm, train_one_epoch
from ..io import CvreproError, atomic_write_bytes, read_json, sha256_file, write_json
from ..lineage import git_state
from ..models import build_model, count_parameters
from ..paths import CHECKPOINT, LABEL_MAP, PREPROCESSING, PROCESSED_INFO, TRAIN_INFO, TRAIN_LOG_DIR, WEIGHTS, processed_split
from .preprocess import ProcessedSplit
from .snapshot import ignore_index_of, task_of

OUTPUTS = {
    "segmentation": {"mask": "[S,S] category id per input pixel (0 background); resize to the original image "
                             "(scores bilinear, then argmax)", "scores": "[K,S,S] softmax over ids 0..K-1"},
    "classification": {"label": "category id; see label_map.json", "scores": "[K] softmax over ids 0..K-1"},
}


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to zero (picklable)."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = max(warmup, 0), max(total, 1)

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return (it + 1) / self.warmup
        progress = (it - self.warmup) / max(self.total - self.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_torch(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def make_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise CvreproError(f"params.yaml: train.optimizer '{cfg['optimizer']}' is unknown (sgd, adamw)")


def predictor_spec(params: dict, class_map: dict[str, str]) -> dict:
    """Everything a predictor needs besides the weights, bundled with the artifact."""
    pre = params["preprocess"]
    task = task_of(params)
    if task != "detection":  # the detection spec keeps its earlier bytes
        return {
            "task": task,
            "model": params["model"],
            "num_classes": max(int(k) for k in class_map) + 1,
            "ignore_index": ignore_index_of(params),
            "input": {"size": pre["size"], "resize": "stretch to size x size, bilinear", "color": "RGB",
                      "scale": "uint8 / 255", "mean": pre["mean"], "std": pre["std"]},
            "output": OUTPUTS[task],
        }
    return {
        "model": params["model"],
        "num_classes": max(int(k) for k in class_map) + 1,
        "input": {"size": pre["size"], "resize": "stretch to size x size, bilinear", "color": "RGB",
                  "scale": "uint8 / 255", "mean": pre["mean"], "std": pre["std"]},
        "output": {"boxes": "xyxy in input pixels; divide x by size/width and y by size/height for the original image",
                   "labels": "category ids; see label_map.json", "score_thresh": params["model"].get("score_thresh"),
                   "nms_thresh": params["model"].get("nms_thresh")},
    }


def _build(spec: dict, size: int, class_map: dict[str, str], mean: list[float] | None = None,
           std: list[float] | None = None) -> torch.nn.Module:
    inp = spec["input"]
    return build_model(spec["model"], spec["num_classes"], size, mean or inp["mean"], std or inp["std"],
                       task=spec.get("task", "detection"), class_ids=[int(k) for k in class_map],
                       ignore_index=spec.get("ignore_index", 255))


def train(params: dict, root: Path = Path(".")) -> dict:
    from ..preflight import for_training

    cfg = params["train"]
    checks = for_training(params, root)  # strict: refuses here, before any work; warn: recorded below
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    info = read_json(root / PROCESSED_INFO)
    class_map = info["class_map"]
    spec = predictor_spec(params, class_map)
    task = task_of(params)
    if info.get("task", "detection") != task:
        raise CvreproError(f"{PROCESSED_INFO}: data was preprocessed for task '{info.get('task', 'detection')}' "
                           f"but params.yaml says task '{task}'; run the pipeline from snapshot (dvc repro)")
    model = _build(spec, info["size"], class_map, info["mean"], info["std"])
    split = ProcessedSplit(root / processed_split("train"))
    if len(split) == 0:
        raise CvreproError(f"{processed_split('train')}: the train split is empty")
    dataset = TRAIN_SETS[task](split, int(cfg["seed"]), float(cfg["hflip"]))
    optimizer = make_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(split) / cfg["batch_size"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(int(cfg["warmup_iters"]), cfg["epochs"] * steps_per_epoch)
    )

    from dvclive import Live  # DVC writes dvc.yaml plots itself; DVCLive only logs

    if (git := git_state(root))["commit"] is None and git["dirty"] is not None:
        # DVCLive (and dvc exp) fail obscurely in a git repository without commits.
        raise CvreproError("this git repository has no commit yet: commit the project before training")

    def save_checkpoint(epoch: int) -> None:
        save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "config": params,
                    "class_map": class_map}, root / CHECKPOINT)

    history = []
    with Live(dir=str(root / TRAIN_LOG_DIR), save_dvc_exp=False, dvcyaml=False) as live:
        for epoch in range(int(cfg["epochs"])):
            loader = make_loader(dataset, int(cfg["batch_size"]), int(cfg["seed"]), epoch, int(cfg["num_workers"]))
            losses = train_one_epoch(model, optimizer, scheduler, loader, epoch, cfg.get("max_grad_norm"))
            history.append(losses)
            for name, value in losses.items():
                live.log_metric(name, value)
            live.log_metric("lr", optimizer.param_groups[0]["lr"])
            live.next_step()
            print(f"epoch {epoch + 1}/{cfg['epochs']}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
            save_checkpoint(epoch + 1)  # every epoch: a crash loses at most one epoch of work

    bn_batches = int(params["model"].get("bn_recalibration_batches", 0))
    if bn_batches:
        # fresh batches, as if one epoch more (epoch index = epochs)
        loader = make_loader(dataset, int(cfg["batch_size"]), int(cfg["seed"]), int(cfg["epochs"]), 0)
        recalibrate_batchnorm(model, loader, bn_batches)
        save_checkpoint(int(cfg["epochs"]))

    save_torch(model.state_dict(), root / WEIGHTS)
    write_json(root / LABEL_MAP, class_map)
    write_json(root / PREPROCESSING, spec)
    # No config ID here: train does not depend on every param (evaluate's do not
    # retrain), so the lineage record written by evaluate carries it.
    summary = {
        "snapshot_id": info["snapshot_id"],
        "seeds": {"train": int(cfg["seed"]), "split": int(params["split"]["seed"])},
        "threads": int(cfg["threads"]),
        "epochs": int(cfg["epochs"]),
        "parameters": count_parameters(model),
        "train_images": len(split),
        "final_losses": history[-1] if history else {},
        "weights_sha256": sha256_file(root / WEIGHTS),
        "preflight": checks,
    }
    write_json(root / TRAIN_INFO, summary)
    return summary


def load_predictor(models_dir: Path):
    """The trained model in eval mode, with its preprocessing spec and label map."""
    models_dir = Path(models_dir)
    spec = read_json(models_dir / PREPROCESSING.name)
    label_map = read_json(models_dir / LABEL_MAP.name)
    model = _build(spec, spec["input"]["size"], label_map)
    model.load_state_dict(torch.load(models_dir / WEIGHTS.name, map_location="cpu", weights_only=True))
    model.eval()
    return model, spec, label_map
