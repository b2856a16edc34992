"""Out-of-sample predictions for `cvrepro label-issues`, and the ranked list of likely label mistakes.

A label can only be judged by a model that never trained on it:
- `heldout` (default): the trained model (models/) on the splits it did not train on (val, test). Cheap: one
  prediction pass, so the default `dvc repro` stays fast; the train split is not judged.
- `kfold`: also the train split, cut into k seeded folds; for each fold a model of the same config is
  trained for `epochs` epochs on the other k-1 folds and predicts the held-out one. Costs about
  k * (k-1)/k * epochs / train.epochs of one training run.

The task's collector (tasks/issue_rows.py) scores the predictions; this module writes
label_issues.csv (the eight columns of `cvrepro labels apply`, then score and reason), the picture sheet of
the top issues and a summary.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from cvrepro import tasks
from cvrepro.config.schema import LabelIssues, Params
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, read_json, write_json
from cvrepro.core.paths import LABEL_ISSUES, MODELS_DIR, PREPROCESSING, PROCESSED_INFO, processed_split
from cvrepro.dataset.corrections import COLUMNS
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.learning import devices
from cvrepro.learning.artifacts import build_from_spec, load_predictor, predictor_spec
from cvrepro.learning.engine import make_loader, predict_batches, recalibrate_batchnorm, train_one_epoch
from cvrepro.learning.trainer import WarmupCosine, bn_recalibration_batches, make_optimizer, seed_of
from cvrepro.tasks.issue_rows import collector

OUT_DIR = LABEL_ISSUES.parent
CSV_NAME, SHEET_NAME, SUMMARY_NAME = LABEL_ISSUES.name, "label_issues.png", "summary.json"
FIELDS = (*COLUMNS, "score", "reason")


class _Rows:
    """rows[i] = base[idx[i]]: a fold's view of a split's array (images, labels, masks)."""

    def __init__(self, base, idx: np.ndarray):
        self.base, self.idx = base, idx
        self.shape = (len(idx), *base.shape[1:])

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return np.stack([np.asarray(self.base[int(j)]) for j in self.idx[i]]) if len(self.idx[i]) else \
                np.zeros((0, *self.shape[1:]), np.uint8)
        return self.base[int(self.idx[i])]


class FoldSplit:
    """The images `idx` of a processed split, with its interface (what a task's train set reads)."""

    def __init__(self, split: ProcessedSplit, idx: np.ndarray):
        self.split, self.idx = split, np.asarray(idx, dtype=np.int64)
        self.images = _Rows(split.images, self.idx)
        self.image_ids, self.scales = split.image_ids[self.idx], split.scales[self.idx]
        self.labels = _Rows(split.labels, self.idx) if split.labels is not None and split.offsets is None else None
        self.masks = _Rows(split.masks, self.idx) if split.masks is not None else None

    def __len__(self) -> int:
        return len(self.idx)

    def target(self, i: int):
        return self.split.target(int(self.idx[i]))


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint, seeded folds of range(n), each sorted."""
    if k < 2:
        raise CvreproError(f"params.yaml: label_issues.k must be at least 2, got {k}")
    order = np.random.default_rng([seed, n]).permutation(n)
    return [np.sort(order[f::k]) for f in range(k)]


def train_fold(params: ParamsLike, split: ProcessedSplit, idx: np.ndarray, epochs: int, device) -> torch.nn.Module:
    """A model of `params` trained on the images `idx` of `split` for `epochs` epochs (seeded, as train is)."""
    cfg = typed(params)
    train = cfg.train
    info = read_json(Path(split.dir).parent / PROCESSED_INFO.name)
    torch.manual_seed(seed_of(train))
    model = build_from_spec(predictor_spec(cfg, info["class_map"]), info["size"], info["class_map"],
                            info["mean"], info["std"]).to(device)
    dataset = tasks.get(cfg.task).train_set(FoldSplit(split, idx), train.seed, train.hflip, cfg.augment)
    optimizer = make_optimizer(train, model)
    batch = train.batch_size
    steps = max(1, -(-len(idx) // batch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(train.warmup_iters, epochs * steps))
    for epoch in range(epochs):
        loader = make_loader(dataset, batch, train.seed, epoch, train.num_workers)
        train_one_epoch(model, optimizer, scheduler, loader, epoch, train.max_grad_norm, device=device)
    bn_batches = bn_recalibration_batches(cfg)
    if bn_batches:
        recalibrate_batchnorm(model, make_loader(dataset, batch, train.seed, epochs, 0), bn_batches, device)
    return model.eval()


def _keep_weak_predictions(model, floor: float) -> None:
    """A detector keeps its predictions down to `floor`: a weak detection of a box is still evidence that the
    box is no mistake (spurious scores 1 - the best overlapping score)."""
    if hasattr(model, "score_thresh"):
        model.score_thresh = min(float(model.score_thresh), floor)


def _predict_into(found, model, split_name: str, data, idx: np.ndarray, floor: float = 0.001) -> None:
    _keep_weak_predictions(model, floor)
    view = FoldSplit(data, idx) if len(idx) != len(data) else data
    for start, outs in predict_batches(model, view.images, desc=f"predict {split_name}"):
        for j, out in enumerate(outs):
            found.add(split_name, data, int(idx[start + j]), out)


def settings(cfg: Params) -> LabelIssues:
    """The `label_issues` section; a params.yaml composed before conf/label_issues/ existed has none."""
    if cfg.label_issues is None:
        raise CvreproError("params.yaml: label_issues is missing; compose it from conf/ (`cvrepro compose`, "
                           "whose defaults list selects label_issues: heldout)")
    return cfg.label_issues


def run(params: ParamsLike, root: Path = Path("."), keep: list | None = None) -> dict:
    """Predict out of sample, score, write OUT_DIR/{label_issues.csv, label_issues.png, summary.json}.

    keep: a list the task's collector (holding every prediction) is appended to, to score it again."""
    cfg = typed(params)
    li, train = settings(cfg), cfg.train
    devices.pin_cpu_isa(train)
    devices.apply_determinism(train.deterministic)
    torch.set_num_threads(train.threads)
    device = devices.resolve_device(train.device)
    model, spec, label_map = load_predictor(root / MODELS_DIR, device)
    task = tasks.of_record(spec, str(PREPROCESSING))
    names = {int(k): v for k, v in label_map.items()}
    found = collector(task, cfg, root, names, li)
    if keep is not None:
        keep.append(found)
    splits, seconds = {}, {}
    started = time.perf_counter()
    for split in li.splits:
        splits[split] = data = ProcessedSplit(root / processed_split(split))
        _predict_into(found, model, split, data, np.arange(len(data)))
    seconds["heldout_predict"] = round(time.perf_counter() - started, 2)
    if li.mode == "kfold":
        started = time.perf_counter()
        splits["train"] = data = ProcessedSplit(root / processed_split("train"))
        epochs = li.epochs or train.epochs
        parts = folds(len(data), li.k, seed_of(train))
        for f, held in enumerate(parts):
            rest = np.sort(np.concatenate([p for g, p in enumerate(parts) if g != f]))
            print(f"label-issues: fold {f + 1}/{li.k}: training on {len(rest)} images for {epochs} epochs")
            _predict_into(found, train_fold(cfg, data, rest, epochs, device), "train", data, held)
        seconds["kfold"] = round(time.perf_counter() - started, 2)
    issues = rank(found.issues(), li.min_score)
    out = root / OUT_DIR
    write_csv(out / CSV_NAME, [i["row"] for i in issues])
    top = issues[: li.sheet_issues]
    (out / SHEET_NAME).unlink(missing_ok=True)
    if top:
        found.sheet(top, splits, out / SHEET_NAME)
    summary = {"task": task.name, "mode": li.mode, "splits": sorted(splits), "issues": len(issues),
               "by_reason": {r: sum(i["reason"] == r for i in issues) for r in sorted({i["reason"] for i in issues})},
               "k": li.k if li.mode == "kfold" else None, "seconds": seconds}
    write_json(out / SUMMARY_NAME, summary)
    return summary


def rank(issues: list[dict], min_score: float) -> list[dict]:
    """Those scored min_score or more, interleaved by kind: the first of each reason (highest score first among
    them), then the second of each, ... Scores rank within a reason but are no common scale across reasons (a
    spurious box scores near 1 where a wrong class scores near 0.5), so a plain sort would bury whole kinds."""
    kept = sorted((i for i in issues if i["score"] >= min_score), key=lambda i: -i["score"])  # stable: ties in order
    seen: dict[str, int] = {}
    place = []
    for i in kept:
        place.append(seen.get(i["reason"], 0))
        seen[i["reason"]] = place[-1] + 1
    order = sorted(range(len(kept)), key=lambda n: (place[n], -kept[n]["score"], n))
    return [kept[n] for n in order]


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
