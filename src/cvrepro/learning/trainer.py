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

import io
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cvrepro import tasks
from cvrepro.config.schema import Params, Train
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, read_json, sha256_file, write_json
from cvrepro.core.paths import (CHECKPOINT, LABEL_MAP, PREPROCESSING, PROCESSED_INFO, TRAIN_INFO, TRAIN_LOG_DIR,
                                WEIGHTS, processed_split)
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


def make_optimizer(train: Train, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser of `train.optimizer` over the trainable weights (`train`: the typed section)."""
    weights = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(weights, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(weights, lr=train.lr, weight_decay=train.weight_decay)
    raise CvreproError(f"params.yaml: train.optimizer '{train.optimizer}' is unknown (sgd, adamw)")


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


@dataclass
class Run:
    """What `setup` builds for one training run: where it runs, the data, the model and its optimiser."""

    cfg: Params  # the typed config; checkpoint "config" records it as written (as_dict)
    root: Path
    rank: int
    world: int
    device: torch.device
    precision: str
    hardware: dict
    info: dict  # data/processed/preprocess.json
    spec: dict  # the predictor spec bundled with the weights
    split: ProcessedSplit
    dataset: torch.utils.data.Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: object | None
    batch_size: int
    steps_per_epoch: int

    @property
    def train(self) -> Train:
        return self.cfg.train

    @property
    def class_map(self) -> dict:
        return self.info["class_map"]

    def checkpoint(self, epoch: int) -> dict:
        """models/checkpoint.pt's content after `epoch` epochs (the resume checkpoint adds to it)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "config": self.cfg.as_dict(),
                "class_map": self.class_map}


@dataclass
class Progress:
    """The epochs done: restored from a resume checkpoint, then extended by the loop."""

    history: list[dict] = field(default_factory=list)  # the losses of each epoch
    lrs: list[float] = field(default_factory=list)  # the learning rate at the end of each epoch
    first_epoch: int = 0
    resumed: bool = False
    images_seen: int = 0  # in this process, all ranks together
    seconds: float = 0.0


def train(params: ParamsLike, root: Path = Path("."), preflight: dict | None = None) -> dict:
    """Train the model of `params` on root/data/processed; write models/ and the training log.

    preflight: the checks made before training (recorded in models/train.json). With
    train.devices * train.num_nodes > 1 this process launches torchrun's workers and returns
    what rank 0 wrote. The steps, as torchvision's reference scripts: setup, restore, loop, outputs."""
    cfg = typed(params)
    if distributed.needs_launch(cfg.train):
        distributed.launch(cfg.train)
        return read_json(root / TRAIN_INFO)
    run = setup(cfg, root)
    require_a_commit(root)
    progress, key = restore(run)
    fit(run, progress, key)
    agreed = distributed.agree_on_weights(run.model, _weights_bytes, run.rank, run.world)
    if agreed is None:
        return {}  # not rank 0: rank 0 alone writes outputs
    return write_outputs(run, progress, *agreed, preflight)


def setup(params: ParamsLike, root: Path) -> Run:
    """Devices and determinism, the checked data, the model, optimiser, scheduler and scaler. The order of
    the seeded steps (model initialisation after the seed) fixes the weights: keep it."""
    cfg = typed(params)
    train = cfg.train
    rank, local_rank, world = distributed.world()
    device, precision, deterministic = _devices(train, local_rank)
    info = read_json(root / PROCESSED_INFO)
    task = _task_of_data(cfg, info)
    spec = predictor_spec(cfg, info["class_map"])
    model = build_from_spec(spec, info["size"], info["class_map"], info["mean"], info["std"])
    split = ProcessedSplit(root / processed_split("train"))
    if len(split) == 0:
        raise CvreproError(f"{processed_split('train')}: the train split is empty")
    dataset = task.train_set(split, train.seed, train.hflip, cfg.augment)
    model.to(device)
    optimizer = make_optimizer(train, model)
    batch_size = train.batch_size  # per device: the effective batch is batch_size * world size
    steps_per_epoch = math.ceil(len(split) / (batch_size * world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(train.warmup_iters, train.epochs * steps_per_epoch)
    )
    scaler = devices.grad_scaler(device, precision)
    hardware = devices.hardware_record(device, precision, deterministic, world, train.num_nodes, train)
    return Run(cfg, root, rank, world, device, precision, hardware, info, spec, split, dataset, model, optimizer,
               scheduler, scaler, batch_size, steps_per_epoch)


def _devices(train: Train, local_rank: int) -> tuple[torch.device, str, bool]:
    """(device, precision, deterministic), checked and applied, with the threads and the seed set."""
    devices.pin_cpu_isa(train)  # a library caller may not have pinned; no effect on a level already settled
    devices.check_cpu_isa(train)
    device = devices.resolve_device(train.device, local_rank)
    precision = devices.check_precision(train.precision, device)
    devices.apply_determinism(train.deterministic)
    torch.set_num_threads(train.threads)
    torch.manual_seed(seed_of(train))
    return device, precision, train.deterministic


def seed_of(train: Train) -> int:
    """`train.seed`, which training needs: the schema lets it be null so that preflight can report a null seed
    as a failed check (warn policy) instead of refusing the composition; training refuses it here, in one line."""
    if train.seed is None:
        raise CvreproError("params.yaml: train.seed is null; training needs an integer seed (conf/train/)")
    return train.seed


def _task_of_data(cfg: Params, info: dict):
    """The task of params.yaml, which must be the one the data was preprocessed for."""
    task = tasks.get(cfg.task)
    processed_for = tasks.of_record(info, str(PROCESSED_INFO))
    if processed_for is not task:
        raise CvreproError(f"{PROCESSED_INFO}: data was preprocessed for task '{processed_for.name}' "
                           f"but params.yaml says task '{task.name}'; run the pipeline from snapshot (dvc repro)")
    return task


def require_a_commit(root: Path) -> None:
    """DVCLive (and dvc exp) fail obscurely in a git repository without commits: say so plainly."""
    if (git := git_state(root))["commit"] is None and git["dirty"] is not None:
        raise CvreproError("this git repository has no commit yet: commit the project before training")


def restore(run: Run) -> tuple[Progress, dict | None]:
    """Join the process group, and load rank 0's resume checkpoint of this very run on every rank
    (learning/resume.py); returns the progress it holds (none: epoch 0) and the run's resume key."""
    if run.world > 1:
        distributed.init(run.device)
    key = resume.resume_key(run.cfg, run.root, run.hardware["class"]) if run.rank == 0 else None
    state = resume.load(run.root, key) if run.rank == 0 else None
    if run.world > 1:
        state = distributed.broadcast(state, run.rank)
    if state is None:
        return Progress(), key
    resume.apply(state, run.model, run.optimizer, run.scheduler, run.scaler, run.device)
    return Progress(state["history"], state["lrs"], int(state["epoch"]), resumed=True), key


def fit(run: Run, progress: Progress, key: dict | None) -> None:
    """The epoch loop from progress.first_epoch: log each epoch (DVCLive, rank 0) and save the resume
    checkpoint after it, so that a crash (or kill -9) loses at most one epoch of work."""
    from dvclive import Live  # DVC writes dvc.yaml plots itself; DVCLive only logs

    train = run.train
    net = distributed.wrap(run.model, run.device) if run.world > 1 else run.model
    live = Live(dir=str(run.root / TRAIN_LOG_DIR), save_dvc_exp=False, dvcyaml=False) if run.rank == 0 else None
    started = time.perf_counter()
    try:
        for losses, lr in zip(progress.history, progress.lrs):  # a resumed run logs the epochs done before the kill again
            _log(live, losses, lr)
        for epoch in range(progress.first_epoch, train.epochs):
            loader = make_loader(run.dataset, run.batch_size, train.seed, epoch, train.num_workers,
                                 run.rank, run.world)
            losses = train_one_epoch(net, run.optimizer, run.scheduler, loader, epoch, train.max_grad_norm,
                                     device=run.device, autocast=devices.autocast(run.device, run.precision),
                                     scaler=run.scaler, after_step=_kill_hook(epoch * run.steps_per_epoch),
                                     show=run.rank == 0)
            progress.images_seen += len(run.split)
            progress.history.append(losses)
            progress.lrs.append(run.optimizer.param_groups[0]["lr"])
            if run.rank == 0:
                _log(live, losses, progress.lrs[-1])
                print(f"epoch {epoch + 1}/{train.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
                resume.save(run.root, run.checkpoint(epoch + 1), key, progress.history, progress.lrs, run.scaler,
                            run.device)
    finally:
        if live is not None:
            live.end()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    progress.seconds = time.perf_counter() - started


def bn_recalibration_batches(cfg: Params) -> int:
    """`model.bn_recalibration_batches`: a key only of the models with BatchNorm to re-estimate (schema's
    Recalibrated and its subclasses); 0, nothing to do, for every other model."""
    return getattr(cfg.model, "bn_recalibration_batches", 0)


def recalibrate(run: Run, weights: bytes) -> bytes:
    """The weights after BatchNorm re-estimation (`model.bn_recalibration_batches`; 0: unchanged), on
    fresh batches, as if one epoch more (epoch index = epochs), on rank 0 alone."""
    bn_batches = bn_recalibration_batches(run.cfg)
    if not bn_batches:
        return weights
    loader = make_loader(run.dataset, run.batch_size, run.train.seed, run.train.epochs, 0)
    recalibrate_batchnorm(run.model, loader, bn_batches, device=run.device)
    return _weights_bytes(run.model)


def write_outputs(run: Run, progress: Progress, weights: bytes, rank_hashes: list[str],
                  preflight: dict | None) -> dict:
    """The four artifacts (checkpoint, weights, label map, predictor spec) and models/train.json; then
    drop the resume checkpoint (a kill before that resumes at the last epoch, same bits)."""
    root = run.root
    weights = recalibrate(run, weights)
    save_torch(run.checkpoint(run.train.epochs), root / CHECKPOINT)
    atomic_write_bytes(root / WEIGHTS, weights)
    write_json(root / LABEL_MAP, run.class_map)
    write_json(root / PREPROCESSING, run.spec)
    summary = _summary(run, progress, rank_hashes, preflight)
    write_json(root / TRAIN_INFO, summary)
    resume.clear(root)  # after the outputs: a kill before this line resumes at the last epoch, same bits
    return summary


def _summary(run: Run, progress: Progress, rank_hashes: list[str], preflight: dict | None) -> dict:
    """models/train.json. No config ID here: train does not depend on every param (evaluate's do not
    retrain), so the lineage record written by evaluate carries it."""
    cfg = run.cfg
    images_seen, seconds = progress.images_seen, progress.seconds
    return {
        "snapshot_id": run.info["snapshot_id"],
        "seeds": {"train": cfg.train.seed, "split": cfg.split.seed},
        "threads": cfg.train.threads,
        "epochs": cfg.train.epochs,
        "parameters": count_parameters(run.model),
        "train_images": len(run.split),
        "final_losses": progress.history[-1] if progress.history else {},
        "weights_sha256": sha256_file(run.root / WEIGHTS),
        "hardware": run.hardware,
        "rank_weights_sha256": rank_hashes,  # before BatchNorm re-estimation, which rank 0 does alone
        "resumed_from_epoch": progress.first_epoch if progress.resumed else None,
        # the epochs run in this process, all ranks together (a machine figure, not part of the result)
        "throughput": {"images_per_s": round(images_seen / seconds, 2) if images_seen else None,
                       "seconds": round(seconds, 2)},
        "written_by": {"rank": run.rank, "world_size": run.world, "pid": os.getpid()},  # rank 0 alone writes outputs
        "preflight": preflight,
    }


def _log(live, losses: dict, lr: float) -> None:
    if live is None:
        return
    for name, value in losses.items():
        live.log_metric(name, value)
    live.log_metric("lr", lr)
    live.next_step()
