"""Issue 19.4: `cvrepro predict MODEL IMAGES --out DIR`. Fast tests use an untrained model saved as the trainer
saves it (real torch, ONNX Runtime, PIL, the real format writers); the slow test trains a tiny detector, predicts
a folder with a corrupt image in both runtimes and imports the COCO pre-annotations back with `cvrepro import`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cvrepro import tasks
from cvrepro.core.fileio import CvreproError, sha256_file, write_json
from cvrepro.provenance.predict import choose_outputs, load, predict_folder

from helpers import commit_all, copy_template, run, tiny_params
from helpers.predict import image_folder, untrained_models


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return untrained_models(tmp_path_factory.mktemp("predict") / "models")


def predict(models: Path, images: Path, out: Path, **kw) -> dict:
    options = {k: kw.pop(k) for k in ("runtime", "device") if k in kw}
    predictor, about = load(str(models), **options)
    return predict_folder(predictor, about, images, out, **kw)


def test_detection_writes_every_output_and_reports_the_broken_image(detector, tmp_path):
    images = image_folder(tmp_path / "images")
    summary = predict(detector, images, tmp_path / "out", score_thresh=0.0, batch_size=2)
    out = tmp_path / "out"
    assert summary["images"] == 4 and summary["predicted"] == 3 and summary["skipped"] == 1
    report = list(csv.DictReader((out / "predict_report.csv").open()))
    assert [Path(r["file"]).name for r in report] == ["bad.jpg"] and "truncated" in report[0]["problem"]
    results = json.loads((out / "results.json").read_text())
    assert len(results) == summary["predictions"] > 0
    assert {"image_id", "file_name", "category_id", "bbox", "score"} <= set(results[0])
    assert {r["file_name"] for r in results} <= {"img_0.png", "sub/img_1.jpg", "img_2.png"}
    txts = sorted(p.relative_to(out / "yolo-txt").as_posix() for p in (out / "yolo-txt").rglob("*.txt"))
    assert txts == ["img_0.txt", "img_2.txt", "sub/img_1.txt"]  # one per image read
    assert all(len(line.split()) == 6 for p in (out / "yolo-txt").rglob("*.txt") for line in p.read_text().splitlines())
    coco = json.loads((out / "coco/annotations/instances_default.json").read_text())
    assert len(coco["images"]) == 3 and len(coco["annotations"]) == len(results)
    # pycocotools reads the results against the same images (the pre-annotation set's image ids)
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": coco["images"], "annotations": [], "categories": coco["categories"]}
    gt.createIndex()
    dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(results)
    assert all(gt.imgs[r["image_id"]]["file_name"].endswith(Path(r["file_name"]).name) for r in results)
    assert (out / "voc/Annotations/sub/img_1.xml").is_file() and (out / "yolo/data.yaml").is_file()
    assert json.loads((out / "predict.json").read_text())["skipped"] == 1
    assert not list(tmp_path.glob(".out.predict-*"))  # the temporary folder is gone


def test_formats_choose_the_outputs_and_the_threshold_filters(detector, tmp_path):
    images = image_folder(tmp_path / "images", broken=False)
    low = predict(detector, images, tmp_path / "low", formats="results", score_thresh=0.0)
    high = predict(detector, images, tmp_path / "high", formats="results,results", score_thresh=0.99)
    written = sorted(p.name for p in (tmp_path / "low").iterdir())
    assert written == ["predict.json", "predict_report.csv", "results.json"]
    assert high["outputs"] == ["results"] and high["predictions"] < low["predictions"]
    assert (tmp_path / "low/predict_report.csv").read_text() == "file,problem\n"


@pytest.mark.parametrize("kw, message", [
    ({"formats": "coco,masks"}, "--formats coco,masks: masks; a detection model writes results, yolo-txt"),
    ({"batch_size": 0}, "--batch-size 0: must be at least 1"),
    ({"score_thresh": 1.5}, "--score-thresh 1.5: must be between 0 and 1"),
])
def test_bad_arguments_are_one_line_errors(detector, tmp_path, kw, message):
    with pytest.raises(CvreproError, match=message.replace("(", r"\(")):
        predict(detector, image_folder(tmp_path / "images"), tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_places_are_checked_before_any_prediction(detector, tmp_path):
    images = image_folder(tmp_path / "images")
    with pytest.raises(CvreproError, match="inside"):
        predict(detector, images, images / "predictions")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    with pytest.raises(CvreproError, match="exists and is not an empty folder"):
        predict(detector, images, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CvreproError, match="no images found"):
        predict(detector, tmp_path / "empty", tmp_path / "out")
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(CvreproError, match="none of the 1 images could be read"):
        predict(detector, only_bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    predict(detector, images, tmp_path / "full", force=True, formats="results")
    assert not (tmp_path / "full/keep.txt").exists() and (tmp_path / "full/results.json").is_file()


def test_model_argument_errors(detector, tmp_path):
    with pytest.raises(CvreproError, match="not a release tag"):
        load(str(tmp_path))
    with pytest.raises(CvreproError, match="--device cuda: --runtime onnx runs on the CPU"):
        load(str(detector), runtime="onnx", device="cuda")
    with pytest.raises(CvreproError, match="--runtime tflite"):
        load(str(detector), runtime="tflite")


def test_segmentation_is_not_supported_yet_in_one_line():
    with pytest.raises(CvreproError, match="does not support the segmentation task yet .it supports detection, "
                                           "classification"):
        choose_outputs(tasks.get("segmentation"), None)


def test_classification_writes_a_label_per_image(tmp_path):
    models = untrained_models(tmp_path / "models", ["task=classification"])
    images = image_folder(tmp_path / "images")
    summary = predict(models, images, tmp_path / "out")
    assert summary["outputs"] == ["results", "csv", "imagefolder"] and summary["predictions"] == 3
    rows = list(csv.DictReader((tmp_path / "out/predictions.csv").open()))
    assert sorted(r["file_name"] for r in rows) == ["img_0.png", "img_2.png", "sub/img_1.jpg"]
    assert all(r["class_name"] in ("person", "cart", "shelf") and 0 <= float(r["score"]) <= 1 for r in rows)
    copies = [p for p in (tmp_path / "out/imagefolder").rglob("*") if p.is_file()]
    assert len(copies) == 3 and all(p.relative_to(tmp_path / "out/imagefolder").parts[0] in ("person", "cart", "shelf")
                                    for p in copies)


def bundle_of(models: Path, dest: Path) -> Path:
    """A release bundle folder as `make_bundle` lays it out (model.onnx and bundle.json's contract)."""
    from cvrepro.learning.artifacts import load_predictor
    from cvrepro.provenance.export import export_onnx

    model, spec, label_map = load_predictor(models)
    dest.mkdir()
    size = spec["input"]["size"]
    contract = export_onnx(model, size, dest / "model.onnx")
    write_json(dest / "bundle.json", {
        "version": "v0.1.0", "task": "detection", "label_map": label_map, **contract,
        "input_spec": {"shape": [1, 3, size, size], "dtype": "uint8", "resize": spec["input"]["resize"]},
        "files": {"models/releases/v0.1.0/model.onnx": sha256_file(dest / "model.onnx")}})
    return dest


def test_a_bundle_folder_predicts_in_onnx_as_the_model_folder_does(detector, tmp_path):
    bundle = bundle_of(detector, tmp_path / "v0.1.0")
    images = image_folder(tmp_path / "images", broken=False)
    a = predict(bundle, images, tmp_path / "a", formats="results", score_thresh=0.05)
    b = predict(detector, images, tmp_path / "b", formats="results", score_thresh=0.05, runtime="onnx")
    assert a["runtime"] == "onnx" and a["kind"] == "bundle"
    assert (tmp_path / "a/results.json").read_text() == (tmp_path / "b/results.json").read_text()
    with pytest.raises(CvreproError, match="holds the ONNX model only"):
        load(str(bundle), runtime="torch")
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"x")
    with pytest.raises(CvreproError, match="sha256 differs"):
        load(str(bundle))


def test_cli_error_is_one_line_and_a_kill_leaves_no_output(detector, tmp_path):
    images = image_folder(tmp_path / "images")
    res = run(["cvrepro", "predict", str(tmp_path / "nope"), str(images), "--out", str(tmp_path / "out")],
              tmp_path, check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a release tag" in res.stderr
    killed = run(["cvrepro", "predict", str(detector), str(images), "--out", str(tmp_path / "out")], tmp_path,
                 check=False, env={"CVREPRO_KILL_AT": "predict:written"})
    assert killed.returncode == -9 and not (tmp_path / "out").exists()
    assert len(list(tmp_path.glob(".out.predict-*"))) == 1  # the dead run's folder, beside DIR
    done = run(["cvrepro", "predict", str(detector), str(images), "--out", str(tmp_path / "out"), "--formats",
                "results"], tmp_path)
    assert json.loads(done.stdout)["skipped"] == 1 and "bad.jpg" in done.stderr
    assert not list(tmp_path.glob(".out.predict-*")) and (tmp_path / "out/results.json").is_file()


# --------------------------------------------------------------------------- slow: a trained detector


def assert_same_detections(a: Path, b: Path, floor: float = 0.2, scale: float = 160 / 128) -> None:
    """The results.json of two runs agree image by image within the release parity tolerance, its box tolerance
    (input pixels) times `scale` (original / input pixels: the demo's 160 x 120 scenes at 128 px)."""
    import numpy as np

    from cvrepro.provenance.export import TOLERANCE, compare

    def per_image(folder: Path) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in json.loads((folder / "results.json").read_text()):
            out.setdefault(r["file_name"], []).append(r)
        return out

    sides = per_image(a), per_image(b)
    for name in set(sides[0]) | set(sides[1]):
        arrays = [[{"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rs)]).reshape(-1, 4),
                    "scores": np.array([r["score"] for r in rs]), "labels": np.array([r["category_id"] for r in rs])}]
                  for rs in (side.get(name, []) for side in sides)]
        report = compare(*arrays, {**TOLERANCE, "box_px": TOLERANCE["box_px"] * scale}, score_floor=floor)
        assert report["ok"], (name, report)


@pytest.mark.slow
def test_trained_detector_on_a_folder_both_runtimes_and_import_back(tiny_root, tmp_path):
    from cvrepro.stages.train import run as train

    train(tiny_params(), tiny_root)
    images = tmp_path / "images"
    shutil.copytree(tiny_root / "data/raw", images, ignore=shutil.ignore_patterns("classification"))
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    torch_run = predict(tiny_root / "models", images, tmp_path / "torch", score_thresh=0.2, batch_size=4)
    onnx_run = predict(tiny_root / "models", images, tmp_path / "onnx", score_thresh=0.2, runtime="onnx",
                       formats="results")
    assert torch_run["skipped"] == onnx_run["skipped"] == 1 and torch_run["predictions"] > torch_run["predicted"]
    assert "corrupt.png" in (tmp_path / "torch/predict_report.csv").read_text()
    assert_same_detections(tmp_path / "torch", tmp_path / "onnx")
    # the COCO pre-annotations import back as a project's dataset, every box kept
    project = copy_template(tmp_path / "project")
    run(["cvrepro", "import", "coco", str(tmp_path / "torch/coco"), "--no-dvc-add"], project)
    imported = json.loads((project / "data/labels/annotations.json").read_text())
    assert len(imported["images"]) == torch_run["predicted"]
    assert len(imported["annotations"]) == torch_run["predictions"]


@pytest.mark.slow
def test_a_release_tag_and_its_bundle_folder_predict_alike(released_copy, tmp_path):
    root = released_copy
    run(["dvc", "repro"], root)
    commit_all(root, "first model")
    run(["cvrepro", "release", "model"], root)
    images = tmp_path / "images"
    shutil.copytree(root / "data/raw", images, ignore=shutil.ignore_patterns("classification"))
    common = [str(images), "--formats", "results", "--score-thresh", "0.2"]
    tag = json.loads(run(["cvrepro", "predict", "v0.1.0", *common, "--out", str(tmp_path / "tag")], root).stdout)
    bundle = json.loads(run(["cvrepro", "predict", "models/releases/v0.1.0", *common, "--out",
                             str(tmp_path / "bundle")], root).stdout)
    assert (tag["kind"], tag["runtime"], bundle["kind"], bundle["runtime"]) == ("release", "torch", "bundle", "onnx")
    assert tag["predicted"] == bundle["predicted"] == 30 and tag["predictions"] > 0
    assert_same_detections(tmp_path / "tag", tmp_path / "bundle")
    assert run(["git", "status", "--porcelain"], root).stdout == ""  # predicting changed nothing in the project


def test_two_images_sharing_a_stem_are_refused_before_any_prediction_for_yolo(detector, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("x.jpg", "x.png"):
        Image.new("RGB", (32, 24)).save(images / name)
    with pytest.raises(CvreproError, match="same name as .* but for the extension"):
        predict(detector, images, tmp_path / "out", formats="results,yolo-txt")
    assert not (tmp_path / "out").exists()
    predict(detector, images, tmp_path / "ok", formats="results")  # without YOLO files there is no clash
