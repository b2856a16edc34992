"""Training: fit the model chosen by `model.name` (a detector, segmenter or classifier,
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

from cvrepro import tasks
from cvrepro.core.fileio import CvreproError, read_json, sha256_file, write_json
from cvrepro.core.paths import (CHECKPOINT, LABEL_MAP, PREPROCESSING, PROCESSED_INFO, TRAIN_INFO, TRAIN_LOG_DIR,
                                WEIGHTS, processed_split)
from cvrepro.core.vcs import git_state
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.learning.artifacts import build_from_spec, predictor_spec, save_torch
from cvrepro.learning.engine import make_loader, recalibrate_batchnorm, train_one_epoch
from cvrepro.learning.models import count_parameters

class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to zero (picklable)."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = max(warmup, 0), max(total, 1)

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return (it + 1) / self.warmup
        progress = (it - self.warmup) / max(self.total - self.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise CvreproError(f"params.yaml: train.optimizer '{cfg['optimizer']}' is unknown (sgd, adamw)")


def train(params: dict, root: Path = Path("."), preflight: dict | None = None) -> dict:
    """Train the model of `params` on root/data/processed; write models/ and the training log.

    preflight: the checks made before training (recorded in models/train.json)."""
    cfg = params["train"]
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    info = read_json(root / PROCESSED_INFO)
    class_map = info["class_map"]
    task = tasks.of_params(params)
    processed_for = tasks.of_record(info, str(PROCESSED_INFO))
    if processed_for is not task:
        raise CvreproError(f"{PROCESSED_INFO}: data was preprocessed for task '{processed_for.name}' "
                           f"but params.yaml says task '{task.name}'; run the pipeline from snapshot (dvc repro)")
    spec = predictor_spec(params, class_map)
    model = build_from_spec(spec, info["size"], class_map, info["mean"], info["std"])
    split = ProcessedSplit(root / processed_split("train"))
    if len(split) == 0:
        raise CvreproError(f"{processed_split('train')}: the train split is empty")
    dataset = task.train_set(split, int(cfg["seed"]), float(cfg["hflip"]), params.get("augment"))
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
        "preflight": preflight,
    }
    write_json(root / TRAIN_INFO, summary)
    return summary
