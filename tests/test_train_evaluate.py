"""train and evaluate on a tiny processed demo dataset: determinism, checkpoint
contents, the non-finite-loss guard, metrics shape, plots and the lineage record."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from cvrepro.core.fileio import CvreproError, read_json, sha256_file
from cvrepro.core.paths import (CHECKPOINT, LABEL_MAP, LINEAGE, METRICS, PLOTS_DIR, PREDICTIONS_GRID, TRAIN_LOG_DIR,
                           WEIGHTS, processed_split)
from cvrepro.stages import evaluate
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.stages.train import run as train

from helpers import run, tiny_params


def test_preprocess_arrays_match_the_annotations(tiny_data):
    info = read_json(tiny_data / "data/processed/preprocess.json")
    coco = read_json(tiny_data / "data/labels/annotations.json")
    total = 0
    for name in ("train", "val", "test"):
        data = ProcessedSplit(tiny_data / processed_split(name))
        assert data.images.shape[1:] == (3, info["size"], info["size"]) and data.images.dtype == np.uint8
        assert len(data.offsets) == len(data) + 1
        total += len(data)
        if len(data):
            boxes, _ = data.target(0)
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes <= info["size"] + 1e-3).all()
    assert total == len(coco["images"])


@pytest.mark.slow
def test_same_inputs_give_bit_identical_weights(tiny_root, tmp_path):
    params = tiny_params()
    first = train(params, tiny_root)
    weights = sha256_file(tiny_root / WEIGHTS)
    second = train(params, tiny_root)
    assert sha256_file(tiny_root / WEIGHTS) == weights == first["weights_sha256"] == second["weights_sha256"]
    # the loader's worker count does not change the bits: augmentation comes from (seed, epoch, index)
    train(tiny_params(overrides=["train.num_workers=2"]), tiny_root)
    assert sha256_file(tiny_root / WEIGHTS) == weights
    # a different seed does
    train(tiny_params(overrides=["train.seed=1"]), tiny_root)
    assert sha256_file(tiny_root / WEIGHTS) != weights


@pytest.mark.slow
def test_checkpoint_holds_everything_needed_to_resume(tiny_root):
    params = tiny_params()
    train(params, tiny_root)
    ckpt = torch.load(tiny_root / CHECKPOINT, weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "config", "class_map"} <= set(ckpt)
    assert ckpt["epoch"] == params["train"]["epochs"]
    assert ckpt["config"] == params
    assert ckpt["class_map"] == read_json(tiny_root / LABEL_MAP) == {"1": "person", "2": "cart", "3": "shelf"}
    loss_log = tiny_root / TRAIN_LOG_DIR / "plots/metrics/loss.tsv"
    assert len(loss_log.read_text().splitlines()) == params["train"]["epochs"] + 1  # header + one row per epoch


@pytest.mark.slow
def test_non_finite_loss_stops_the_run(tiny_root):
    params = tiny_params(overrides=["train.lr=1e30", "train.max_grad_norm=0", "train.warmup_iters=0"])
    with pytest.raises(CvreproError, match="non-finite loss"):
        train(params, tiny_root)
    assert not (tiny_root / WEIGHTS).exists()


def test_training_in_a_repository_without_commits_is_a_clear_error(tiny_root):
    run(["git", "init", "-q"], tiny_root)
    with pytest.raises(CvreproError, match="no commit yet"):
        train(tiny_params(), tiny_root)


@pytest.mark.slow
def test_evaluate_writes_metrics_plots_grid_and_lineage(tiny_root):
    params = tiny_params()
    train(params, tiny_root)
    metrics = evaluate.run(params, tiny_root)
    assert metrics == read_json(tiny_root / METRICS)
    for split in ("val", "test"):
        m = metrics[split]
        assert {"AP", "AP50", "AP75"} <= set(m)
        assert set(m["per_class"]) == {"person", "cart", "shelf"}
        assert set(m["time_of_day"]) <= {"day", "night"}
    assert metrics["latency_ms"] > 0
    with (tiny_root / PLOTS_DIR / "pr_val.csv").open() as f:
        assert {row["class"] for row in csv.DictReader(f)} == {"person", "cart", "shelf"}
    assert (tiny_root / PREDICTIONS_GRID).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = read_json(tiny_root / LINEAGE)
    assert lineage["config_id"].startswith("smoke+")
    assert lineage["dataset"]["snapshot_id"].startswith("sha256:")
    assert lineage["seeds"] == {"split": 42, "train": 0}
    assert lineage["artifacts"]["models/model.pt"] == sha256_file(tiny_root / WEIGHTS)
    assert lineage["metrics"] == json.loads(json.dumps(metrics))
    assert lineage["environment"]["torch"] == torch.__version__.split("+")[0]


def test_a_null_train_seed_is_refused_in_one_line_before_training():
    # the schema lets train.seed be null so that preflight can report it as a failed check; training refuses it
    import dataclasses

    from cvrepro.config.typed import typed
    from cvrepro.learning.trainer import seed_of

    section = typed(tiny_params()).train
    assert seed_of(section) == section.seed
    with pytest.raises(CvreproError, match=r"^params.yaml: train.seed is null; training needs an integer seed"):
        seed_of(dataclasses.replace(section, seed=None))
