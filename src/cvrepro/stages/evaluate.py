"""evaluate: metrics per split, per class and per slice, plots, and the run's lineage record (metrics/)."""

from __future__ import annotations

from pathlib import Path

from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json, write_json
from cvrepro.core.paths import LABEL_MAP, LINEAGE, MANIFEST, METRICS, PREPROCESSING, PROCESSED_DIR, TRAIN_INFO, WEIGHTS
from cvrepro.learning.evaluation import evaluate
from cvrepro.provenance.lineage import build_lineage


def run(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Write metrics.json and the run's lineage record."""
    root = Path(root)
    cfg = typed(params)
    metrics = evaluate(cfg, root)
    write_json(root / METRICS, metrics)
    lineage = build_lineage(
        root, cfg, read_json(root / MANIFEST), metrics,  # the lineage records the composition as written
        artifacts=[WEIGHTS, LABEL_MAP, PREPROCESSING, PROCESSED_DIR, MANIFEST],
        seeds={"split": cfg.split.seed, "train": cfg.train.seed},
        extra={"train": read_json(root / TRAIN_INFO)},
        # Stage outputs that dvc repro is rewriting right now do not make the *code* dirty.
        git_exclude=["dvc.lock", "metrics", "models/train.json"],
    )
    train_info = lineage.get("extra", {}).get("train", {})
    lineage["preflight"] = train_info.get("preflight")  # warn policy: failures live here
    # device, model, CPU kernel level, CUDA/cuDNN, precision, world size, deterministic: what `reproduce` matches
    lineage["hardware"] = train_info.get("hardware")
    write_json(root / LINEAGE, lineage)
    return metrics
