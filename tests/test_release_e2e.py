"""The release scenario of issue 3, end to end against moto's S3 server on 127.0.0.1:
demo -> DS-0.1.0 -> train -> v0.1.0 -> more images (computed minor) -> DS-0.2.0 ->
label fixes from a CSV (computed patch) -> DS-0.2.1 -> retrain -> v0.2.0; then a
fresh clone with an empty cache restores each version from S3 alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers import S3_ENV, copy_template, edit, run, s3_bucket, tiny_conf

pytestmark = pytest.mark.slow


def sh(root: Path, *cmd: str) -> str:
    return run(list(cmd), root, env=S3_ENV).stdout


def commit_all(root: Path, message: str) -> None:
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", message)


def release(root: Path, kind: str, *args: str) -> dict:
    return json.loads(sh(root, "cvrepro", "release", kind, "--json", *args))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def iou_xyxy(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def scenario(s3_server, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("scenario")
    root = copy_template(base / "origin")
    tiny_conf(root)
    url = s3_bucket(s3_server, "cvrepro-e2e")
    # Shared remote settings are committed; credentials come from the environment only.
    sh(root, "dvc", "remote", "add", "-d", "storage", f"{url}/dvc")
    sh(root, "dvc", "remote", "modify", "storage", "endpointurl", s3_server)
    sh(root, "cvrepro", "demo", "--images", "120", "--seed", "4")
    sh(root, "dvc", "add", "data/raw", "data/labels")
    commit_all(root, "demo data, S3 remote")
    sh(root, "dvc", "repro", "split")
    commit_all(root, "snapshot")
    facts = {"DS-0.1.0": release(root, "dataset")}

    sh(root, "dvc", "repro")
    commit_all(root, "first model")
    facts["v0.1.0"] = release(root, "model")

    sh(root, "cvrepro", "demo", "--images", "160", "--seed", "4", "--force")  # 40 more images, the rest unchanged
    sh(root, "dvc", "repro", "split")
    commit_all(root, "40 more images")
    facts["DS-0.2.0"] = release(root, "dataset")

    coco = json.loads((root / "data/labels/annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    a, b, c = coco["annotations"][:3]
    other = next(n for i, n in names.items() if i != c["category_id"])
    x, y, w, h = a["bbox"]
    csv = base / "fixes.csv"
    csv.write_text("image,annotation_id,action,category,x,y,w,h\n"
                   f"{files[a['image_id']]},{a['id']},move,,{x + 1},{y},{w - 1},{h}\n"
                   f"{files[b['image_id']]},{b['id']},delete,,,,,\n"
                   f"{files[c['image_id']]},{c['id']},relabel,{other},,,,\n")
    sh(root, "cvrepro", "labels", "apply", str(csv))
    sh(root, "dvc", "repro", "split")
    commit_all(root, "label fixes from review")
    facts["DS-0.2.1"] = release(root, "dataset")

    # A real model for load_model (8 epochs on 160 images).
    edit(root / "conf/experiment/smoke.yaml", "epochs: 2", "epochs: 8")
    edit(root / "conf/experiment/smoke.yaml", "warmup_iters: 5", "warmup_iters: 100")
    edit(root / "conf/train/default.yaml", "batch_size: 4", "batch_size: 8")
    sh(root, "dvc", "repro")
    commit_all(root, "retrain on DS-0.2.1, 8 epochs")
    facts["v0.2.0"] = release(root, "model")

    clone = base / "clone"
    sh(base, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / ".dvc/cache").exists()
    return {"origin": root, "clone": clone, "records": facts}


def test_versions_and_computed_bumps(scenario):
    r = scenario["records"]
    assert [r[v]["version"] for v in r] == ["DS-0.1.0", "v0.1.0", "DS-0.2.0", "DS-0.2.1", "v0.2.0"]
    assert r["DS-0.2.0"]["bump"] == "minor" and len(r["DS-0.2.0"]["changelog"]["images"]["added"]) == 40
    changelog = r["DS-0.2.1"]["changelog"]
    assert r["DS-0.2.1"]["bump"] == "patch"
    assert changelog["labels"]["boxes"] == {"added": 0, "removed": 1, "moved": 1, "relabelled": 1}
    assert len(changelog["labels"]["changes"]) == len({c["path"] for c in changelog["labels"]["changes"]}) <= 3
    assert r["v0.1.0"]["dataset_version"] == "DS-0.1.0" and r["v0.2.0"]["dataset_version"] == "DS-0.2.1"
    assert r["v0.2.0"]["bump"] == "minor" and "data changed" in r["v0.2.0"]["bump_reason"]
    assert r["v0.2.0"]["params_changed"] == {"train.epochs": [2, 8], "train.warmup_iters": [5, 100],
                                             "train.batch_size": [4, 8]}
    notes = (scenario["origin"] / "models/releases/v0.2.0.md").read_text()
    assert "## Caveats" in notes and "DS-0.2.1" in notes and r["v0.2.0"]["config_id"] in notes
    origin = scenario["origin"]
    before = (sh(origin, "git", "rev-parse", "HEAD"), sh(origin, "git", "tag"))
    res = run(["cvrepro", "release", "model"], origin, check=False, env=S3_ENV)
    assert res.returncode == 2 and "nothing changed since v0.2.0" in res.stderr
    assert (sh(origin, "git", "rev-parse", "HEAD"), sh(origin, "git", "tag")) == before


def test_fresh_clone_restores_model_weights_from_s3(scenario):
    clone = scenario["clone"]
    sh(clone, "git", "checkout", "-q", "v0.1.0")
    sh(clone, "dvc", "pull")
    weights = hashlib.sha256((clone / "models/model.pt").read_bytes()).hexdigest()
    assert weights == scenario["records"]["v0.1.0"]["artifacts"]["models/model.pt"]


def test_fresh_clone_restores_every_file_of_a_dataset_version(scenario):
    clone = scenario["clone"]
    sh(clone, "git", "checkout", "-q", "DS-0.2.0")
    shutil.rmtree(clone / "data/raw", ignore_errors=True)
    sh(clone, "dvc", "pull")
    manifest = json.loads((clone / "data/snapshot/manifest.json").read_text())
    assert manifest["snapshot_id"] == scenario["records"]["DS-0.2.0"]["snapshot_id"]
    assert len(manifest["files"]) == 160
    for f in manifest["files"]:
        assert md5(clone / "data/raw" / f["path"]) == f["md5"], f["path"]


def test_dvc_model_registry_gets_each_release_from_s3(scenario, tmp_path):
    """Issue 21: `dvc artifacts get` and `gto show` see our releases through the GTO tags (fresh clone, no cache)."""
    clone, records = scenario["clone"], scenario["records"]
    for version in ("v0.1.0", "v0.2.0"):
        out = tmp_path / f"{version}.pt"
        sh(clone, "dvc", "artifacts", "get", ".", "model", "--rev", version, "-o", str(out))
        assert hashlib.sha256(out.read_bytes()).hexdigest() == records[version]["artifacts"]["models/model.pt"]
    images = tmp_path / "DS-0.2.0"
    sh(clone, "dvc", "artifacts", "get", ".", "dataset", "--rev", "v0.2.0", "-o", str(images))
    assert len(list(images.glob("img_*.png"))) == 160  # the detection images (the demo adds classification/ crops)
    shown = json.loads(sh(clone, "gto", "show", "--json"))
    assert shown["model"]["version"] == "v0.2.0" and shown["dataset"]["version"] == "v0.2.1"
    history = sh(clone, "gto", "show", "model", "--json")
    assert {"v0.1.0", "v0.2.0"} <= {row["version"] for row in json.loads(history)}


def test_metrics_diff_and_registry(scenario):
    clone = scenario["clone"]
    diff = sh(clone, "dvc", "metrics", "diff", "v0.1.0", "v0.2.0", "--json")
    changed = json.loads(diff)["metrics/metrics.json"]
    assert changed["val.AP50"]["old"] != changed["val.AP50"]["new"]
    listing = sh(clone, "cvrepro", "ls")
    assert [line.split()[0] for line in listing.splitlines()] == ["DS-0.1.0", "DS-0.2.0", "DS-0.2.1", "v0.1.0", "v0.2.0"]
    rows = json.loads(sh(clone, "cvrepro", "ls", "--json"))
    assert rows[-1]["dataset"] == "DS-0.2.1" and rows[-1]["metrics"]["val"]["AP50"] > 0


def test_load_model_predicts_the_demo_objects(scenario, monkeypatch):
    import cvrepro

    clone = scenario["clone"]
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    sh(clone, "git", "checkout", "-q", "DS-0.2.1")
    sh(clone, "dvc", "pull")
    shutil.rmtree(clone / ".dvc/cache")  # the model's bytes must come from S3 through dvc.api
    predictor = cvrepro.load_model("v0.2.0", repo=str(clone))
    assert predictor.class_names == {1: "person", 2: "cart", 3: "shelf"}

    coco = json.loads((clone / "data/labels/annotations.json").read_text())
    by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    val = json.loads((clone / "data/splits/splits.json").read_text())["splits"]["val"]
    found = total = 0
    for name in val:
        truth = [a for a in coco["annotations"] if a["image_id"] == by_name[name]]
        preds = predictor(clone / "data/raw" / name, score_threshold=0.3)
        for a in truth:
            x, y, w, h = a["bbox"]
            total += 1
            found += any(p["label"] == a["category_id"] and iou_xyxy(p["box"], [x, y, x + w, y + h]) >= 0.5
                         for p in preds)
    assert total > 0 and found / total >= 0.6, f"found {found} of {total} val objects"
