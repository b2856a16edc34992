"""task=classification: the demo's single-object variant, snapshot validation, split class
counts, preprocess, train and evaluate on tiny data, the metrics and the confusion CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvrepro.dataset.demo import generate_demo
from cvrepro.core.fileio import CvreproError, canonical_json, read_json, sha256_bytes, sha256_file
from cvrepro.core.paths import LABELS_DIR, LINEAGE, METRICS, PREDICTIONS_GRID, RAW_DIR, WEIGHTS, processed_split
from cvrepro.stages import evaluate
from cvrepro.stages import snapshot
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.stages.train import run as train
from cvrepro.learning.confusion_metrics import classification_scores, confusion

from helpers import prepared_data, run_copy, tiny_params

INDEX = LABELS_DIR / "classification.json"


def cls_params(*more: str) -> dict:
    return tiny_params(overrides=["task=classification", *more])


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    """2 scenes and 60 single-object images, prepared."""
    return prepared_data(tmp_path_factory.mktemp("cls"), cls_params(), n_images=2, n_classification=60)


@pytest.fixture
def cls_root(cls_data: Path, tmp_path: Path, monkeypatch) -> Path:
    return run_copy(cls_data, tmp_path, monkeypatch)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    generate_demo(tmp_path, seed=1, n_images=1, n_classification=6)
    return tmp_path


# --------------------------------------------------------------------------- demo variant


def test_demo_classification_variant_is_deterministic_and_growth_stable(tmp_path, cls_data):
    generate_demo(tmp_path, seed=3, n_images=2, n_classification=64)
    index = read_json(cls_data / INDEX)
    bigger = read_json(tmp_path / INDEX)
    assert bigger["images"][:60] == index["images"] and bigger["annotations"][:60] == index["annotations"]
    for im in index["images"]:
        assert sha256_file(cls_data / RAW_DIR / im["file_name"]) == sha256_file(tmp_path / RAW_DIR / im["file_name"])
        assert im["file_name"].startswith("classification/") and im["time_of_day"] in ("day", "night")
        with Image.open(cls_data / RAW_DIR / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]) == (64, 64)
    assert [a["image_id"] for a in index["annotations"]] == [im["id"] for im in index["images"]]
    assert all(set(a) == {"id", "image_id", "category_id"} for a in index["annotations"])
    assert {a["category_id"] for a in index["annotations"]} == {1, 2, 3}
    other = tmp_path / "other"
    generate_demo(other, seed=4, n_images=2, n_classification=3)
    first = index["images"][0]["file_name"]
    assert sha256_file(other / RAW_DIR / first) != sha256_file(cls_data / RAW_DIR / first)


# --------------------------------------------------------------------------- snapshot and split


def test_manifest_and_split_carry_the_labels(cls_data):
    manifest = read_json(cls_data / "data/snapshot/manifest.json")
    index = read_json(cls_data / INDEX)
    assert manifest["task"] == "classification" and manifest["stats"]["images"] == 60
    label = {a["image_id"]: a for a in index["annotations"]}
    for f in manifest["files"]:
        a = label[f["image_id"]]
        assert f["category_id"] == a["category_id"]
        assert f["labels_hash"] == sha256_bytes(canonical_json({"category_id": a["category_id"], "id": a["id"]}).encode())
    per_class = manifest["stats"]["per_class"]
    assert sum(per_class.values()) == 60
    splits = read_json(cls_data / "data/splits/splits.json")
    counts = splits["class_counts"]
    for name in ("train", "val", "test"):
        assert sum(counts[name].values()) == splits["counts"][name]
    assert {c: sum(counts[s][c] for s in counts) for c in per_class} == per_class


def _edit(root: Path, change) -> None:
    index = read_json(root / INDEX)
    change(index)
    (root / INDEX).write_text(json.dumps(index))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["annotations"].pop(0),
     r"image id 1 \(classification/cls_000000.png\): a classification image needs exactly one label .* found 0"),
    (lambda c: c["annotations"].append({"id": 99, "image_id": 2, "category_id": 1}),
     r"image id 2 .* found 2 \(annotation ids: 2, 99\)"),
    (lambda c: c["annotations"][0].update(category_id=9),
     r"annotations\[0\] \(annotation id 1\), image id 1: 'category_id' 9 is not in 'categories'"),
    (lambda c: c["annotations"][0].pop("category_id"),
     r"annotations\[0\] \(annotation id 1\): missing required key 'category_id'"),
])
def test_bad_labels_are_clear_errors_and_write_nothing(small, change, message):
    _edit(small, change)
    with pytest.raises(CvreproError, match=message):
        snapshot.run(cls_params(), small)
    assert not (small / "data/snapshot/manifest.json").exists()


def test_the_index_file_is_chosen_by_dataset_annotations(small):
    # a dataset option without a per-task file (what `cvrepro import` writes): dataset.annotations decides
    with pytest.raises(CvreproError, match="must be a file name inside data/labels"):
        snapshot.run(cls_params("dataset=demo_classification", "dataset.annotations=../x.json"), small)
    # the scenes' index has several boxes per image: not a classification dataset
    with pytest.raises(CvreproError, match="exactly one label"):
        snapshot.run(cls_params("dataset=demo_classification", "dataset.annotations=annotations.json"), small)
    # the demo names its classification index per task; the task option never switches the dataset
    params = cls_params()
    assert params["dataset"]["name"] == "demo"
    assert params["dataset"]["annotations_by_task"]["classification"] == "classification.json"
    # a dataset that states its task refuses another one, saying so
    with pytest.raises(CvreproError, match="task is 'detection' but the dataset 'demo_classification' holds "
                                           "classification labels"):
        snapshot.run(tiny_params(overrides=["dataset=demo_classification"]), small)


# --------------------------------------------------------------------------- preprocess, train, evaluate


def test_preprocess_stores_one_label_per_image(cls_data):
    data = ProcessedSplit(cls_data / processed_split("train"))
    manifest = read_json(cls_data / "data/snapshot/manifest.json")
    label = {f["image_id"]: f["category_id"] for f in manifest["files"]}
    assert data.images.shape[1:] == (3, 64, 64) and data.masks is None
    assert data.labels.tolist() == [label[int(i)] for i in data.image_ids]


@pytest.mark.slow
def test_train_and_evaluate_write_metrics_confusion_grid_and_lineage(cls_root):
    params = cls_params()
    first = train(params, cls_root)["weights_sha256"]
    assert train(params, cls_root)["weights_sha256"] == first  # deterministic
    metrics = evaluate.run(params, cls_root)
    assert metrics == read_json(cls_root / METRICS)
    for name in ("val", "test"):
        m = metrics[name]
        assert 0 <= m["accuracy"] <= 1 and set(m["per_class"]) == {"person", "cart", "shelf"}
        assert {"precision", "recall", "f1", "support"} == set(m["per_class"]["cart"])
        assert set(m["time_of_day"]) <= {"day", "night"}
    with (cls_root / "metrics/plots/confusion_val.csv").open() as f:
        rows = list(csv.DictReader(f))
    val = ProcessedSplit(cls_root / processed_split("val"))
    assert [int(r["image_id"]) for r in rows] == sorted(val.image_ids.tolist())
    hits = sum(r["actual"] == r["predicted"] for r in rows)
    assert metrics["val"]["accuracy"] == pytest.approx(hits / len(rows), abs=1e-6)
    assert Image.open(cls_root / PREDICTIONS_GRID).format == "PNG"
    lineage = read_json(cls_root / LINEAGE)
    assert lineage["params"]["task"] == "classification"
    assert lineage["artifacts"]["models/model.pt"] == sha256_file(cls_root / WEIGHTS)

    # The predictor a release gives (cvrepro.load_model) agrees with evaluate on a val image.
    from cvrepro.learning.predictor import Predictor
    from cvrepro.learning.artifacts import load_predictor

    predictor = Predictor(*load_predictor(cls_root / "models"), version="local", record={})
    manifest = read_json(cls_root / "data/snapshot/manifest.json")
    path = next(f["path"] for f in manifest["files"] if f["image_id"] == int(rows[0]["image_id"]))
    out = predictor(cls_root / "data/raw" / path)
    assert out["class_name"] == rows[0]["predicted"] and sum(out["scores"].values()) == pytest.approx(1, abs=1e-4)


def test_classification_scores_from_a_confusion_matrix():
    actual = [1, 1, 1, 2, 2, 3]
    predicted = [1, 1, 2, 2, 3, 3]
    s = classification_scores(confusion(actual, predicted, 4), {1: "person", 2: "cart", 3: "shelf"})
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["per_class"]["person"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": 0.8, "support": 3}
    assert s["per_class"]["cart"]["precision"] == 0.5 and s["per_class"]["cart"]["recall"] == 0.5
    assert s["per_class"]["shelf"]["precision"] == 0.5 and s["per_class"]["shelf"]["recall"] == 1.0
    assert s["macro_f1"] == pytest.approx(np.mean([0.8, 0.5, 2 / 3]), abs=1e-6)
