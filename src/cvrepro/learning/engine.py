"""The epoch engine, apart from any command line: batching, one training epoch,
BatchNorm re-estimation and prediction. Every random choice comes from
(seed, epoch, index), so results do not depend on the loader's worker count."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cvrepro.core.fileio import CvreproError


def to_tensor(image_uint8: np.ndarray) -> torch.Tensor:
    """[3,S,S] uint8 -> float in [0, 1]; the model's transform applies mean/std."""
    return torch.from_numpy(np.array(image_uint8, dtype=np.float32, copy=True)).div_(255.0)


def collate(batch):
    return tuple(zip(*batch))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def rank_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of an epoch: the epoch's order cut into global batches of
    batch_size * world, each dealt round-robin, so ranks see disjoint shards and one rank
    gives exactly `epoch_batches`. A last global batch smaller than `world` is topped up from
    the start of the order (as DistributedSampler pads), so every rank takes the same steps."""
    if world == 1:
        return epoch_batches(n, batch_size, seed, epoch)
    order = epoch_batches(n, n, seed, epoch)[0]
    out = []
    for g in range(0, n, batch_size * world):
        batch = order[g : g + batch_size * world]
        batch += order[: max(world - len(batch), 0)]
        out.append(batch[rank::world])
    return out


def make_loader(dataset, batch_size: int, seed: int, epoch: int, num_workers: int,
                rank: int = 0, world: int = 1) -> DataLoader:
    dataset.epoch = epoch
    return DataLoader(
        dataset,
        batch_sampler=rank_batches(len(dataset), batch_size, seed, epoch, rank, world),
        collate_fn=collate,
        num_workers=num_workers,
    )


def to_device(obj, device):
    """Tensors (in lists, tuples, dicts) moved to `device`; a no-op on the CPU."""
    if device is None or getattr(device, "type", "cpu") == "cpu":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def train_one_epoch(model, optimizer, scheduler, loader, epoch: int, max_grad_norm: float | None,
                    device=None, autocast=None, scaler=None, after_step=None, show: bool = True) -> dict[str, float]:
    """One pass over `loader`; returns the mean of each loss. Stops on a non-finite loss.

    device: where the batches go (the model is there already); autocast: the mixed-precision
    context (learning/devices.py); scaler: fp16's gradient scaler; after_step(step): called after
    each optimizer step (the resume test's kill hook)."""
    import contextlib

    model.train()
    sums: dict[str, float] = {}
    steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None if show else True)
    for images, targets in bar:
        images, targets = to_device(list(images), device), to_device(list(targets), device)
        with autocast if autocast is not None else contextlib.nullcontext():
            losses = model(images, targets)
            loss = sum(losses.values())
        value = loss.item()
        if not math.isfinite(value):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise CvreproError(
                f"non-finite loss {value} at epoch {epoch}, step {steps} ({parts}); "
                "lower train.lr or check the labels"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        steps += 1
        if after_step is not None:
            after_step(steps)
        sums["loss"] = sums.get("loss", 0.0) + value
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        bar.set_postfix(loss=f"{value:.3f}")
    return {k: v / max(steps, 1) for k, v in sums.items()}


@torch.no_grad()
def recalibrate_batchnorm(model, loader, max_batches: int, device=None) -> None:
    """Re-estimate BatchNorm running statistics from training batches.

    After a short from-scratch training, the running averages lag the weights
    (MobileNetV3 models use momentum 0.03) and eval mode scores near zero."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or max_batches <= 0:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    for i, (images, targets) in enumerate(loader):
        if i >= max_batches:
            break
        model(to_device(list(images), device), to_device(list(targets), device))
    model.eval()


@torch.no_grad()
def predict(model, images: np.ndarray, batch_size: int = 16, desc: str = "predict") -> list[dict[str, np.ndarray]]:
    """Detections for uint8 [N,3,S,S] images, boxes xyxy in the same pixels."""
    model.eval()
    device = model_device(model)
    out = []
    for a in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = [to_tensor(im).to(device) for im in images[a : a + batch_size]]
        for det in model(batch):
            out.append({k: v.cpu().numpy() for k, v in det.items()})
    return out


@torch.no_grad()
def predict_batches(model, images: np.ndarray, batch_size: int = 16, desc: str = "predict"):
    """(index of the first image, list of per-image outputs as numpy) for each batch: streams,
    so dense outputs (segmentation scores) of a large split never sit in memory at once."""
    model.eval()
    device = model_device(model)
    for a in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = [to_tensor(im).to(device) for im in images[a : a + batch_size]]
        yield a, [{k: v.cpu().numpy() for k, v in out.items()} for out in model(batch)]
