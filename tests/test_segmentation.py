"""task=segmentation: the demo's masks, snapshot validation and label hash, preprocess,
train and evaluate on tiny data, and the metrics from a confusion matrix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvrepro.dataset.demo import generate_demo
from cvrepro.core.fileio import CvreproError, read_json, sha256_file
from cvrepro.core.paths import LABELS_DIR, LINEAGE, METRICS, PREDICTIONS_GRID, PROCESSED_INFO, RAW_DIR, WEIGHTS, processed_split
from cvrepro.stages import evaluate
from cvrepro.stages import snapshot
from cvrepro.dataset.processed import ProcessedSplit
from cvrepro.stages.train import run as train
from cvrepro.learning.confusion_metrics import confusion, segmentation_scores

from helpers import prepared_data, run_copy, tiny_params

ANN = LABELS_DIR / "annotations.json"
SEG = ["task=segmentation", "preprocess.size=64"]  # 64 px keeps the tiny runs fast


def seg_params(*more: str) -> dict:
    return tiny_params(overrides=SEG + list(more))


def mask(root: Path, name: str = "img_000000.png") -> np.ndarray:
    return np.asarray(Image.open(root / LABELS_DIR / "masks" / name))


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """A 40-scene demo, prepared for segmentation."""
    return prepared_data(tmp_path_factory.mktemp("seg"), seg_params(), n_images=40, n_classification=0)


@pytest.fixture
def seg_root(seg_data: Path, tmp_path: Path, monkeypatch) -> Path:
    return run_copy(seg_data, tmp_path, monkeypatch)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Six scenes to break in the validation tests."""
    generate_demo(tmp_path, seed=1, n_images=6, n_classification=0)
    return tmp_path


# --------------------------------------------------------------------------- demo masks


def test_demo_masks_are_deterministic_and_match_the_boxes(tmp_path, seg_data):
    generate_demo(tmp_path, seed=3, n_images=40, n_classification=0)
    for p in sorted((seg_data / LABELS_DIR / "masks").iterdir()):
        assert sha256_file(p) == sha256_file(tmp_path / LABELS_DIR / "masks" / p.name)
    coco = read_json(seg_data / ANN)
    boxes = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    for im in coco["images"]:
        m = np.asarray(Image.open(seg_data / LABELS_DIR / im["mask_file"]))
        assert m.shape == (im["height"], im["width"]) and set(np.unique(m)) <= {0, 1, 2, 3}
        covered = np.zeros_like(m, dtype=bool)
        for a in boxes[im["id"]]:
            x, y, w, h = (int(v) for v in a["bbox"])
            covered[y : y + h, x : x + w] = True
            assert (m[y : y + h, x : x + w] == a["category_id"]).any()  # the object is in the mask
        assert (m[~covered] == 0).all()  # nothing outside the boxes


def test_demo_masks_grow_without_changing_earlier_ones(tmp_path, seg_data):
    generate_demo(tmp_path, seed=3, n_images=43, n_classification=0)
    assert all(sha256_file(p) == sha256_file(tmp_path / LABELS_DIR / "masks" / p.name)
               for p in (seg_data / LABELS_DIR / "masks").iterdir())
    assert len(list((tmp_path / LABELS_DIR / "masks").iterdir())) == 43


# --------------------------------------------------------------------------- snapshot


def test_manifest_hashes_decoded_mask_pixels(seg_data, small):
    manifest = read_json(seg_data / "data/snapshot/manifest.json")
    assert manifest["task"] == "segmentation" and manifest["schema"] == "cvrepro.manifest/1"
    entry = manifest["files"][0]
    pixels = mask(seg_data, Path(entry["mask_file"]).name)
    assert entry["labels_hash"] == hashlib.sha256(pixels.tobytes()).hexdigest()
    assert "mask_file" not in entry["attributes"]
    stats = manifest["stats"]
    assert sum(stats["pixels_per_class"].values()) == sum(f["width"] * f["height"] for f in manifest["files"])
    assert set(stats["pixels_per_class"]) == {"background", "person", "cart", "shelf", "ignore"}
    assert 0 < stats["per_class"]["person"] <= stats["images"]  # images containing the class

    params = seg_params()
    first = snapshot.run(params, small)["snapshot_id"]
    path = small / LABELS_DIR / "masks/img_000000.png"
    Image.open(path).save(path, compress_level=9)  # re-encoded, same pixels: not a label change
    assert snapshot.run(params, small)["snapshot_id"] == first
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 if pixels[0, 0] != 255 else 0  # one pixel relabelled (255 = ignore)
    Image.fromarray(pixels).save(path)
    changed = snapshot.run(params, small)
    assert changed["snapshot_id"] != first and changed["stats"]["pixels_per_class"]["ignore"] >= 1


def _edit_image_entry(root: Path, **fields) -> None:
    coco = read_json(root / ANN)
    for k, v in fields.items():
        if v is None:
            coco["images"][0].pop(k)
        else:
            coco["images"][0][k] = v
    (root / ANN).write_text(json.dumps(coco))


@pytest.mark.parametrize("breakage, message", [
    ("no key", r"image id 1 \(img_000000.png\): missing 'mask_file'"),
    ("missing file", r"masks/gone.png: mask file not found"),
    ("escapes", r"'mask_file' '../raw/img_000000.png' must be a path inside"),
    ("unreadable", r"masks/img_000000.png: unreadable or truncated mask"),
    ("rgb", r"masks/img_000000.png: mask must be a single-channel 8-bit PNG \(mode L or P\), got mode RGB"),
    ("size", r"masks/img_000000.png: mask is 80x60 but image id 1 \(img_000000.png\) is 160x120"),
    ("values", r"masks/img_000000.png: mask of image id 1 holds values \[7\] that are neither a category id"),
])
def test_bad_masks_are_clear_errors_and_write_nothing(small, breakage, message):
    path = small / LABELS_DIR / "masks/img_000000.png"
    if breakage == "no key":
        _edit_image_entry(small, mask_file=None)
    elif breakage == "missing file":
        _edit_image_entry(small, mask_file="masks/gone.png")
    elif breakage == "escapes":
        _edit_image_entry(small, mask_file="../raw/img_000000.png")
    elif breakage == "unreadable":
        path.write_bytes(path.read_bytes()[:60])
    elif breakage == "rgb":
        Image.open(path).convert("RGB").save(path)
    elif breakage == "size":
        Image.open(path).resize((80, 60), Image.NEAREST).save(path)
    elif breakage == "values":
        pixels = np.asarray(Image.open(path)).copy()
        pixels[5, 5] = 7
        Image.fromarray(pixels).save(path)
    with pytest.raises(CvreproError, match=message):
        snapshot.run(seg_params(), small)
    assert not (small / "data/snapshot/manifest.json").exists()


def test_palette_masks_and_a_custom_ignore_index_are_accepted(small):
    path = small / LABELS_DIR / "masks/img_000000.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[:2] = 200
    palette = Image.new("P", (pixels.shape[1], pixels.shape[0]))  # palette PNG: the indices are the ids
    palette.putdata(pixels.ravel().tolist())
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    palette.save(path)
    with pytest.raises(CvreproError, match=r"values \[200\]"):
        snapshot.run(seg_params(), small)
    manifest = snapshot.run(seg_params("dataset.ignore_index=200"), small)
    assert manifest["stats"]["pixels_per_class"]["ignore"] == 2 * 160
    assert manifest["files"][0]["labels_hash"] == hashlib.sha256(pixels.tobytes()).hexdigest()


# --------------------------------------------------------------------------- preprocess, train, evaluate


def test_preprocess_resizes_masks_nearest(seg_data):
    info = read_json(seg_data / PROCESSED_INFO)
    assert info["task"] == "segmentation" and info["size"] == 64
    manifest = read_json(seg_data / "data/snapshot/manifest.json")
    by_id = {f["image_id"]: f for f in manifest["files"]}
    data = ProcessedSplit(seg_data / processed_split("train"))
    assert data.masks.shape == (len(data), 64, 64) and data.boxes is None
    for i in range(len(data)):
        original = mask(seg_data, Path(by_id[int(data.image_ids[i])]["mask_file"]).name)
        assert set(np.unique(data.masks[i])) <= set(np.unique(original))  # nearest: no new ids


@pytest.mark.slow
def test_train_and_evaluate_write_metrics_grid_and_lineage(seg_root):
    params = seg_params()
    summary = train(params, seg_root)
    assert train(params, seg_root)["weights_sha256"] == summary["weights_sha256"]  # deterministic
    stale = seg_root / "metrics/plots/pr_val.csv"  # left by a detection run in the same folder
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("recall,person\n")
    metrics = evaluate.run(params, seg_root)
    assert metrics == read_json(seg_root / METRICS)
    for name in ("val", "test"):
        m = metrics[name]
        assert 0 <= m["mIoU"] <= 1 and 0 <= m["pixel_accuracy"] <= 1
        assert set(m["per_class"]) == {"background", "person", "cart", "shelf"}
        assert set(m["time_of_day"]) <= {"day", "night"}
        assert sum(v["images"] for v in m["time_of_day"].values()) == read_json(
            seg_root / "data/splits/splits.json")["counts"][name]
    assert metrics["latency_ms"] > 0
    assert Image.open(seg_root / PREDICTIONS_GRID).format == "PNG"
    assert not stale.exists()
    lineage = read_json(seg_root / LINEAGE)
    assert lineage["params"]["task"] == "segmentation"
    assert lineage["artifacts"]["models/model.pt"] == sha256_file(seg_root / WEIGHTS)
    assert lineage["metrics"]["val"]["mIoU"] == metrics["val"]["mIoU"]

    # The predictor a release gives (cvrepro.load_model) returns a mask at the image's own size.
    from cvrepro.learning.predictor import Predictor
    from cvrepro.learning.artifacts import load_predictor

    predictor = Predictor(*load_predictor(seg_root / "models"), version="local", record={})
    out = predictor(seg_root / RAW_DIR / "img_000000.png")
    assert out["mask"].shape == mask(seg_root).shape and set(np.unique(out["mask"])) <= {0, 1, 2, 3}
    assert out["class_names"] == {0: "background", 1: "person", 2: "cart", 3: "shelf"}


def test_a_detector_is_refused_for_segmentation(seg_root):
    with pytest.raises(CvreproError, match="model.name 'fcos_tiny' is not a segmentation model"):
        train(seg_params("model=fcos_tiny"), seg_root)


def test_training_refuses_data_preprocessed_for_another_task(seg_root):
    with pytest.raises(CvreproError, match="preprocessed for task 'segmentation'.*task 'classification'"):
        train(tiny_params(overrides=["task=classification"]), seg_root)


# --------------------------------------------------------------------------- metrics


def test_segmentation_scores_from_a_confusion_matrix():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 2]])
    cm = confusion(gt, pred, 4, ignore_index=255)
    assert cm.sum() == 7  # the ignored pixel is not counted
    s = segmentation_scores(cm, {0: "background", 1: "person", 2: "cart", 3: "shelf"})
    # background: tp 3, union 3 + 1 (fp) + 1 (fn) = 5; person: tp 2, union 4; cart only at the ignored pixel
    assert s["per_class"]["background"]["IoU"] == pytest.approx(3 / 5)
    assert s["per_class"]["person"]["IoU"] == pytest.approx(2 / 4)
    assert s["per_class"]["cart"]["IoU"] is None and s["per_class"]["shelf"]["IoU"] is None
    assert s["mIoU"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
