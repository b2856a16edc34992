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


def make_loader(dataset, batch_size: int, seed: int, epoch: int, num_workers: int) -> DataLoader:
    dataset.epoch = epoch
    return DataLoader(
        dataset,
        batch_sampler=epoch_batches(len(dataset), batch_size, seed, epoch),
        collate_fn=collate,
        num_workers=num_workers,
    )


def train_one_epoch(model, optimizer, scheduler, loader, epoch: int, max_grad_norm: float | None) -> dict[str, float]:
    """One pass over `loader`; returns the mean of each loss. Stops on a non-finite loss."""
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)
    for images, targets in bar:
        losses = model(list(images), list(targets))
        loss = sum(losses.values())
        value = loss.item()
        if not math.isfinite(value):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise CvreproError(
                f"non-finite loss {value} at epoch {epoch}, step {steps} ({parts}); "
                "lower train.lr or check the labels"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        steps += 1
        sums["loss"] = sums.get("loss", 0.0) + value
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        bar.set_postfix(loss=f"{value:.3f}")
    return {k: v / max(steps, 1) for k, v in sums.items()}


@torch.no_grad()
def recalibrate_batchnorm(model, loader, max_batches: int) -> None:
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
        model(list(images), list(targets))
    model.eval()


@torch.no_grad()
def predict(model, images: np.ndarray, batch_size: int = 16, desc: str = "predict") -> list[dict[str, np.ndarray]]:
    """Detections for uint8 [N,3,S,S] images, boxes xyxy in the same pixels."""
    model.eval()
    out = []
    for a in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = [to_tensor(im) for im in images[a : a + batch_size]]
        for det in model(batch):
            out.append({k: v.numpy() for k, v in det.items()})
    return out


@torch.no_grad()
def predict_batches(model, images: np.ndarray, batch_size: int = 16, desc: str = "predict"):
    """(index of the first image, list of per-image outputs as numpy) for each batch: streams,
    so dense outputs (segmentation scores) of a large split never sit in memory at once."""
    model.eval()
    for a in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = [to_tensor(im) for im in images[a : a + batch_size]]
        yield a, [{k: v.numpy() for k, v in out.items()} for out in model(batch)]
