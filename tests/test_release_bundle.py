"""Issue 14: the shippable release. Per task, a tiny model released by the real `cvrepro release model`
carries an ONNX export whose parity with PyTorch is recorded, and `load_model(tag, runtime="onnx")`
predicts what the PyTorch path predicts; a broken export (wrong input scaling) is refused and leaves
nothing behind. The registry report of a project with two dataset and two model releases opens in a
real headless Chromium with no console error. Real git, DVC, torch, ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import commit_all, copy_template, edit, run, tiny_conf

pytestmark = pytest.mark.slow  # trains and releases real models


def git_facts(root: Path) -> tuple[str, str, str]:
    return (run(["git", "rev-parse", "HEAD"], root).stdout, run(["git", "tag"], root).stdout,
            run(["git", "status", "--porcelain"], root).stdout)


def project_for(root: Path, task: str, images: int = 30) -> Path:
    """The template with the tiny config and `task`, demo data tracked, DS-0.1.0 released, trained."""
    copy_template(root)
    if task != "detection":
        edit(root / "conf/config.yaml", "- task: detection", f"- task: {task}")
    tiny_conf(root)
    run(["dvc", "remote", "add", "--local", "-d", "tmp", str(root.parent / f"{root.name}.remote")], root)
    run(["cvrepro", "demo", "--images", str(images), "--seed", "2"], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "demo data")
    run(["dvc", "repro", "split"], root)
    commit_all(root, "snapshot and split")
    run(["cvrepro", "release", "dataset", "--notes", "first cut"], root)
    run(["dvc", "repro"], root)
    commit_all(root, "first model")
    return root


@pytest.fixture(scope="module")
def detection(tmp_path_factory) -> dict:
    """v0.1.0 on DS-0.1.0, then 16 more images: DS-0.2.0 and v0.2.0; plus an unreleased copy of the
    project as it was just before v0.1.0 (for the refusal test)."""
    base = tmp_path_factory.mktemp("bundle-det")
    root = project_for(base / "project", "detection")
    before = base / "before-release"
    shutil.copytree(root, before, symlinks=True)
    v1 = json.loads(run(["cvrepro", "release", "model", "--json"], root).stdout)
    run(["cvrepro", "demo", "--images", "46", "--seed", "2", "--force"], root)
    run(["dvc", "repro"], root)
    commit_all(root, "16 more images, retrained")
    run(["cvrepro", "release", "dataset"], root)
    v2 = json.loads(run(["cvrepro", "release", "model", "--json", "--notes", "more data"], root).stdout)
    return {"root": root, "before": before, "records": {"v0.1.0": v1, "v0.2.0": v2}}


@pytest.fixture(scope="module", params=["segmentation", "classification"])
def dense(request, tmp_path_factory) -> dict:
    root = project_for(tmp_path_factory.mktemp(f"bundle-{request.param}") / "project", request.param)
    record = json.loads(run(["cvrepro", "release", "model", "--json"], root).stdout)
    return {"root": root, "records": {"v0.1.0": record}, "task": request.param}


def val_images(root: Path) -> list[Path]:
    spec = json.loads((root / "data/splits/splits.json").read_text())["splits"]["val"]
    manifest = json.loads((root / "data/snapshot/manifest.json").read_text())
    raw = root / "data/raw"
    return [raw / p for p in spec if (raw / p).exists()] or [raw / f["path"] for f in manifest["files"][:8]]


def check_bundle(root: Path, record: dict) -> None:
    tag = record["version"]
    export = record["export"]
    parity = export["parity"]
    assert parity["ok"] and parity["images"] > 0, parity
    assert parity["max_score_diff"] <= parity["tolerance"]["score_abs"]
    assert export["format"] == "onnx" and export["opset"] >= 13
    for path, digest in export["files"].items():  # the files DVC pushed are the ones the record names
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path
    committed = run(["git", "ls-tree", "-r", "--name-only", tag, f"models/releases/{tag}/"], root).stdout.split()
    assert {f"models/releases/{tag}/{n}" for n in ("bundle.json", "model_card.md", "model.onnx.dvc",
                                                     "model.safetensors.dvc")} <= set(committed)
    card = run(["git", "show", f"{tag}:models/releases/{tag}/model_card.md"], root).stdout
    for section in ("## Intended use", "## Training data", "## Metrics", "## Known weak spots", "## Caveats",
                    "## Lineage", "## How to load it", record["config_id"], record["dataset_version"]):
        assert section in card, section
    from safetensors.torch import load_file
    import torch

    saved = load_file(str(root / f"models/releases/{tag}/model.safetensors"))
    weights_file = root / "models/model.pt"
    if hashlib.sha256(weights_file.read_bytes()).hexdigest() == record["artifacts"]["models/model.pt"]:
        weights = torch.load(weights_file, map_location="cpu", weights_only=True)  # the release's own weights
        assert set(saved) == set(weights) and all(torch.equal(saved[k], weights[k]) for k in weights)
    assert saved, "no tensors in model.safetensors"


def same_predictions(task_out_torch, task_out_onnx, tolerance: dict, scale: float) -> None:
    if isinstance(task_out_torch, list):  # detection: the boxes in original pixels, so the tolerance scales
        from cvrepro.provenance.export import compare

        arrays = [{"boxes": np.array([d["box"] for d in out], dtype=np.float32).reshape(-1, 4),
                   "scores": np.array([d["score"] for d in out]), "labels": np.array([d["label"] for d in out])}
                  for out in (task_out_torch, task_out_onnx)]
        res = compare(arrays[:1], arrays[1:], {**tolerance, "box_px": tolerance["box_px"] * scale}, score_floor=0.2)
        assert res["ok"], res
    elif "mask" in task_out_torch:
        agree = (task_out_torch["mask"] == task_out_onnx["mask"]).mean()
        assert task_out_torch["mask"].shape == task_out_onnx["mask"].shape and agree >= tolerance["label_agreement"]
    else:
        assert task_out_torch["label"] == task_out_onnx["label"]
        for name, p in task_out_torch["scores"].items():
            assert abs(p - task_out_onnx["scores"][name]) <= tolerance["score_abs"]


def check_onnx_runtime(root: Path, record: dict) -> None:
    import cvrepro
    from PIL import Image

    tag = record["version"]
    onnx = cvrepro.load_model(tag, repo=str(root), runtime="onnx")
    torch_model = cvrepro.load_model(tag, repo=str(root))
    assert type(onnx.model).__name__ == "OnnxModel" and type(torch_model.model).__name__ != "OnnxModel"
    tolerance = record["export"]["parity"]["tolerance"]
    images = val_images(root)
    assert images
    for path in images:
        with Image.open(path) as im:
            scale = max(im.width, im.height) / record["params"]["preprocess"]["size"]
        # score threshold 0.2: far from the detections' 0.05 floor, so none sits on the cut in one runtime only
        same_predictions(torch_model(path, score_threshold=0.2), onnx(path, score_threshold=0.2), tolerance, scale)


def test_detection_release_carries_a_parity_checked_onnx_bundle(detection):
    assert run(["git", "status", "--porcelain"], detection["root"]).stdout == ""  # every bundle file committed
    for record in detection["records"].values():
        check_bundle(detection["root"], record)
        assert record["export"]["batch"] == 1 and record["export"]["parity"]["max_box_diff_px"] <= 0.5
    check_onnx_runtime(detection["root"], detection["records"]["v0.2.0"])
    card = (detection["root"] / "models/releases/v0.2.0/model_card.md").read_text()
    assert "In brackets: v0.1.0" in card  # the previous release beside each metric


def test_dense_release_carries_a_parity_checked_onnx_bundle(dense):
    record = dense["records"]["v0.1.0"]
    check_bundle(dense["root"], record)
    assert record["export"]["batch"] == "dynamic"
    assert record["export"]["outputs"] == ["scores", "mask" if dense["task"] == "segmentation" else "label"]
    check_onnx_runtime(dense["root"], record)


def test_a_broken_export_is_refused_with_the_numbers(detection, monkeypatch):
    from cvrepro.core.fileio import CvreproError
    from cvrepro.provenance import export, release

    root = detection["before"]
    facts = git_facts(root)
    monkeypatch.setattr(export, "INPUT_SCALE", 1.0)  # the graph forgets uint8 / 255: a wrong normalisation
    with pytest.raises(CvreproError) as refused:
        release.release_model(root)
    message = str(refused.value)
    assert "does not predict what the PyTorch model predicts" in message and "release refused" in message
    assert "max_score_diff" in message and "tolerance" in message
    assert git_facts(root) == facts, "a refused release changed the repository"
    assert not (root / "models/releases/v0.1.0").exists()
    monkeypatch.undo()  # the same project releases once the export is right
    assert release.release_model(root)["export"]["parity"]["ok"]


def test_load_model_refuses_an_unknown_runtime(detection):
    import cvrepro
    from cvrepro.core.fileio import CvreproError

    with pytest.raises(CvreproError, match="runtime 'tflite' is not one of torch, onnx"):
        cvrepro.load_model("v0.1.0", repo=str(detection["root"]), runtime="tflite")


def test_report_opens_in_a_headless_browser(detection, tmp_path):
    from helpers.browser import Browser, chromium

    chromium()  # skip (or fail in CI) before doing any work when there is no browser
    root = detection["root"]
    out = tmp_path / "site"
    res = run(["cvrepro", "report", "--out", str(out)], root)
    assert "2 dataset and 2 model versions" in res.stdout
    browser = Browser()
    try:
        index = browser.visit(out / "index.html", {
            "title": "document.title",
            "lineage": "[...document.querySelectorAll('.lineage a')].map(a => a.getAttribute('href'))",
            "tables": "document.querySelectorAll('table').length",
            "charts": "document.querySelectorAll('#trends ~ .grid svg').length",
            "width": "document.documentElement.scrollWidth",
        }, screenshot=tmp_path / "report.png")
        assert index["problems"] == [], index["problems"]
        v = index["values"]
        assert v["title"] == "cvrepro registry" and v["tables"] >= 2 and v["charts"] >= 2
        assert v["width"] <= 1280, "the index scrolls sideways on a laptop screen"
        for target in ("datasets/DS-0.1.0.html", "datasets/DS-0.2.0.html", "models/v0.1.0.html", "models/v0.2.0.html"):
            assert target in v["lineage"], (target, v["lineage"])
            assert (out / target).is_file()
        page = browser.visit(out / "models/v0.2.0.html", {
            "images": "[...document.images].map(i => i.complete && i.naturalWidth > 0)",
            "links": "[...document.querySelectorAll('main a')].map(a => a.getAttribute('href'))",
            "text": "document.body.innerText",
        }, screenshot=tmp_path / "model.png")
        assert page["problems"] == [], page["problems"]
        assert page["values"]["images"] == [True], "the prediction grid did not load"
        assert {"../datasets/DS-0.2.0.html", "../models/v0.1.0.html"} <= set(page["values"]["links"])
        text = page["values"]["text"]
        assert "Model card" in text and "parity" in text and "Precision-recall per class" in text
        ds = browser.visit(out / "datasets/DS-0.2.0.html", {"text": "document.body.innerText"})
        assert ds["problems"] == [] and "Changes since" in ds["values"]["text"] and "16 added" in ds["values"]["text"]
    finally:
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    shown = Path("/tmp/cvrepro-report-screenshots")  # kept for a person to look at
    shown.mkdir(exist_ok=True)
    for name in ("report.png", "model.png"):
        shutil.copy(tmp_path / name, shown / name)
