"""Training: fit the model chosen by `model.name` (a detector, segmenter or classifier,
per `task`) on the processed train split.

Deterministic on the CPU: the same inputs, seed, `train.threads` and `train.cpu_isa` give
bit-identical weights, on any CPU model that has the pinned instruction set. Runs on the
device of `train.device` in `train.precision`, in one process or, with `train.devices` /
`train.num_nodes`, in torchrun's workers (learning/distributed.py). Writes the weights
(state_dict), a checkpoint (model, optimizer, scheduler, epoch, resolved config, class map), the
label map, the pre/post-processing a predictor needs, per-epoch losses through DVCLive and
models/train.json (with the hardware record). A killed run resumes from models/.resume/
(learning/resume.py).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import signal
import time
from pathlib import Path

import torch

from cvrepro import tasks
from cvrepro.config.params import DETERMINISTIC, DEVICE, PRECISION
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, read_json, sha256_file, write_json
from cvrepro.core.paths import (CHECKPOINT, LABEL_MAP, PREPROCESSING, PROCESSED_INFO, RESUME_CHECKPOINT, TRAIN_INFO,
                                TRAIN_LOG_DIR, WEIGHTS, processed_split)
from cvrepro.core.vcs import git_state
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.learning.artifacts import build_from_spec, predictor_spec, save_torch
from cvrepro.learning import devices, distributed, resume
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


def _kill_hook(first_epoch_step: int):
    """CVREPRO_TEST_KILL_AFTER_STEP=N: SIGKILL this process right after global step N (the resume test's
    deterministic point of failure; never set in normal use)."""
    at = os.environ.get("CVREPRO_TEST_KILL_AFTER_STEP")
    if not at:
        return None

    def hook(step: int) -> None:
        if first_epoch_step + step >= int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _weights_bytes(model: torch.nn.Module) -> bytes:
    state = model.state_dict()
    if any(v.device.type != "cpu" for v in state.values()):
        state = {k: v.detach().cpu() for k, v in state.items()}  # a model.pt loads anywhere
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def train(params: dict, root: Path = Path("."), preflight: dict | None = None) -> dict:
    """Train the model of `params` on root/data/processed; write models/ and the training log.

    preflight: the checks made before training (recorded in models/train.json). With
    train.devices * train.num_nodes > 1 this process launches torchrun's workers and returns
    what rank 0 wrote."""
    cfg = params["train"]
    if distributed.needs_launch(cfg):
        distributed.launch(cfg)
        return read_json(root / TRAIN_INFO)
    rank, local_rank, world = distributed.world()
    devices.pin_cpu_isa(cfg)  # a library caller may not have pinned; no effect on a level already settled
    devices.check_cpu_isa(cfg)
    device = devices.resolve_device(cfg.get("device", DEVICE), local_rank)
    precision = devices.check_precision(cfg.get("precision", PRECISION), device)
    deterministic = bool(cfg.get("deterministic", DETERMINISTIC))
    devices.apply_determinism(deterministic)
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
    model.to(device)
    optimizer = make_optimizer(cfg, model)
    batch_size = int(cfg["batch_size"])  # per device: the effective batch is batch_size * world size
    steps_per_epoch = math.ceil(len(split) / (batch_size * world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(int(cfg["warmup_iters"]), cfg["epochs"] * steps_per_epoch)
    )
    scaler = devices.grad_scaler(device, precision)
    hardware = devices.hardware_record(device, precision, deterministic, world, distributed.requested(cfg)[1], cfg)

    if (git := git_state(root))["commit"] is None and git["dirty"] is not None:
        # DVCLive (and dvc exp) fail obscurely in a git repository without commits.
        raise CvreproError("this git repository has no commit yet: commit the project before training")

    if world > 1:
        distributed.init(device)
    key = resume.resume_key(params, root, hardware["class"]) if rank == 0 else None
    state = resume.load(root, key) if rank == 0 else None
    if world > 1:
        state = distributed.broadcast(state, rank)
    history: list[dict] = []
    lrs: list[float] = []
    first_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history, lrs, first_epoch = state["history"], state["lrs"], int(state["epoch"])
    net = distributed.wrap(model, device) if world > 1 else model

    def state_now(epoch: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "config": params, "class_map": class_map}

    from dvclive import Live  # DVC writes dvc.yaml plots itself; DVCLive only logs

    live = Live(dir=str(root / TRAIN_LOG_DIR), save_dvc_exp=False, dvcyaml=False) if rank == 0 else None
    started, images_seen = time.perf_counter(), 0
    try:
        for losses, lr in zip(history, lrs):  # a resumed run logs the epochs done before the kill again
            _log(live, losses, lr)
        for epoch in range(first_epoch, int(cfg["epochs"])):
            loader = make_loader(dataset, batch_size, int(cfg["seed"]), epoch, int(cfg["num_workers"]), rank, world)
            losses = train_one_epoch(net, optimizer, scheduler, loader, epoch, cfg.get("max_grad_norm"), device=device,
                                     autocast=devices.autocast(device, precision), scaler=scaler,
                                     after_step=_kill_hook(epoch * steps_per_epoch), show=rank == 0)
            images_seen += len(split)
            history.append(losses)
            lrs.append(optimizer.param_groups[0]["lr"])
            if rank == 0:
                _log(live, losses, lrs[-1])
                print(f"epoch {epoch + 1}/{cfg['epochs']}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
                # every epoch: a crash (or kill -9) loses at most one epoch of work
                save_torch({**state_now(epoch + 1), "key": key, "history": history, "lrs": lrs,
                            "rng": torch.get_rng_state(), "scaler": scaler.state_dict() if scaler else None,
                            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                           root / RESUME_CHECKPOINT)
    finally:
        if live is not None:
            live.end()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started

    if world > 1:
        # DDP keeps rank 0's buffers (BatchNorm statistics), sending them at each forward; after the
        # last step each rank holds the statistics of its own shard, so take rank 0's once more.
        distributed.sync_buffers(model)
    weights = _weights_bytes(model)
    rank_hashes = [hashlib.sha256(weights).hexdigest()]
    if world > 1:
        rank_hashes = distributed.gather(rank_hashes[0])
        distributed.finish()
        if rank != 0:
            return {}
        if len(set(rank_hashes)) != 1:
            raise CvreproError(f"train: the ranks ended with different weights ({rank_hashes}); no outputs written")

    bn_batches = int(params["model"].get("bn_recalibration_batches", 0))
    if bn_batches:
        # fresh batches, as if one epoch more (epoch index = epochs), on rank 0 alone
        loader = make_loader(dataset, batch_size, int(cfg["seed"]), int(cfg["epochs"]), 0)
        recalibrate_batchnorm(model, loader, bn_batches, device=device)
        weights = _weights_bytes(model)

    save_torch(state_now(int(cfg["epochs"])), root / CHECKPOINT)
    atomic_write_bytes(root / WEIGHTS, weights)
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
        "hardware": hardware,
        "rank_weights_sha256": rank_hashes,  # before BatchNorm re-estimation, which rank 0 does alone
        "resumed_from_epoch": first_epoch if state is not None else None,
        # the epochs run in this process, all ranks together (a machine figure, not part of the result)
        "throughput": {"images_per_s": round(images_seen / seconds, 2) if images_seen else None,
                       "seconds": round(seconds, 2)},
        "written_by": {"rank": rank, "world_size": world, "pid": os.getpid()},  # rank 0 alone writes outputs
        "preflight": preflight,
    }
    write_json(root / TRAIN_INFO, summary)
    resume.clear(root)  # after the outputs: a kill before this line resumes at the last epoch, same bits
    return summary


def _log(live, losses: dict, lr: float) -> None:
    if live is None:
        return
    for name, value in losses.items():
        live.log_metric(name, value)
    live.log_metric("lr", lr)
    live.next_step()
