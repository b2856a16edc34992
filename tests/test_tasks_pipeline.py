"""End to end through real git and real DVC: `dvc exp run -S task=...` switches the whole
pipeline to segmentation or classification on the committed demo data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import copy_template, run
from test_pipeline import edit, stages_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def committed_once(tmp_path_factory) -> Path:
    """The template (smoke experiment, one thread) with a 40-image demo tracked and committed, not yet run."""
    project = copy_template(tmp_path_factory.mktemp("tasks") / "project")
    edit(project / "conf/config.yaml", "experiment: C-01", "experiment: smoke")
    edit(project / "conf/train/default.yaml", "threads: 2", "threads: 1")
    run(["cvrepro", "compose", "--force"], project)
    run(["cvrepro", "demo", "--images", "40", "--seed", "1"], project)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "template with demo data"], project)
    return project


@pytest.fixture
def committed(committed_once: Path, tmp_path: Path) -> Path:
    """A private copy of `committed_once` (git, DVC cache and workspace) for a test that runs it."""
    dest = tmp_path / "project"
    shutil.copytree(committed_once, dest, symlinks=True)
    return dest


def _plots(root: Path) -> dict:
    return json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)


def test_exp_run_task_segmentation(committed: Path):
    out = run(["dvc", "exp", "run", "-S", "task=segmentation", "-S", "preprocess.size=64"], committed).stdout
    assert {"snapshot", "split", "preprocess", "train", "evaluate"} <= stages_run(out), out
    params = yaml.safe_load((committed / "params.yaml").read_text())
    assert params["task"] == "segmentation" and params["model"]["name"] == "unet_small"
    metrics = json.loads((committed / "metrics/metrics.json").read_text())
    assert 0 <= metrics["val"]["mIoU"] <= 1 and "background" in metrics["val"]["per_class"]
    manifest = json.loads((committed / "data/snapshot/manifest.json").read_text())
    assert manifest["task"] == "segmentation"
    lineage = json.loads((committed / "metrics/lineage.json").read_text())
    assert lineage["params"]["task"] == "segmentation"
    assert "metrics/plots/predictions_val.png" in _plots(committed)["data"]
    assert "mIoU" in run(["dvc", "exp", "show", "--json"], committed).stdout


def test_exp_run_task_classification(committed: Path):
    out = run(["dvc", "exp", "run", "-S", "task=classification"], committed).stdout
    assert {"snapshot", "split", "preprocess", "train", "evaluate"} <= stages_run(out), out
    params = yaml.safe_load((committed / "params.yaml").read_text())
    assert params["task"] == "classification" and params["dataset"]["name"] == "demo"  # the task keeps the dataset
    assert params["dataset"]["annotations_by_task"]["classification"] == "classification.json"
    assert json.loads((committed / "data/snapshot/manifest.json").read_text())["task"] == "classification"
    assert (committed / "metrics/plots/confusion_val.png").is_file()
    metrics = json.loads((committed / "metrics/metrics.json").read_text())
    assert 0 <= metrics["val"]["accuracy"] <= 1 and "macro_f1" in metrics["val"]
    plots = _plots(committed)["data"]
    confusion = plots["Confusion matrix (val, classification)"]
    assert confusion and {"actual", "predicted"} <= set(confusion[0]["content"]["data"]["values"][0])
    assert "metrics/plots/predictions_val.png" in plots
    # back to the default task: plain repro of the committed params reruns from the snapshot
    run(["git", "checkout", "--", "params.yaml"], committed)
    out = run(["dvc", "repro"], committed).stdout
    assert {"snapshot", "train", "evaluate"} <= stages_run(out), out
    assert "AP50" in json.loads((committed / "metrics/metrics.json").read_text())["val"]
