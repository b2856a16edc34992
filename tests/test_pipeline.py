"""End to end through real git and real DVC: `dvc repro`, a conf/ edit, and `dvc exp run -S`.

Each test starts from a copy of this template with the tiny `smoke` experiment and a
40-image demo dataset, committed like a user would."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from helpers import copy_template, edit, run, tiny_conf

pytestmark = pytest.mark.slow


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def params_of_last_run(root: Path) -> dict:
    return torch.load(root / "models/checkpoint.pt", weights_only=False)["config"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """The template with the smoke experiment as default, tiny data tracked, first repro committed
    (built once: each test works on its own copy)."""
    project = copy_template(tmp_path_factory.mktemp("pipeline") / "project")
    tiny_conf(project)
    run(["cvrepro", "demo", "--images", "40", "--seed", "1"], project)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "template with demo data"], project)
    out = run(["dvc", "repro"], project).stdout
    assert stages_run(out) == {"compose", "snapshot", "split", "preprocess", "train", "evaluate", "label_issues"}, out
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "first run"], project)
    return project


@pytest.fixture
def pipeline(first_run: Path, tmp_path: Path) -> Path:
    """A private copy of `first_run` (git, DVC cache and workspace) for a test that changes it."""
    dest = tmp_path / "project"
    shutil.copytree(first_run, dest, symlinks=True)
    return dest


def test_repro_then_up_to_date_and_clean(pipeline: Path):
    out = run(["dvc", "repro"], pipeline).stdout
    assert stages_run(out) == set()
    assert "up to date" in out.lower()
    status = run(["dvc", "status"], pipeline).stdout
    assert "Data and pipelines are up to date" in status, status
    metrics = json.loads((pipeline / "metrics/metrics.json").read_text())
    assert {"val", "test", "latency_ms"} <= set(metrics)
    lineage = json.loads((pipeline / "metrics/lineage.json").read_text())
    head = run(["git", "rev-parse", "HEAD~1"], pipeline).stdout.strip()
    assert lineage["code"]["commit"] == head  # the run happened on the "template with demo data" commit
    assert lineage["config_id"].startswith("smoke+")
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]["preprocess"]["outs"]
    processed = next(o["md5"] for o in lock if o["path"] == "data/processed")
    assert lineage["artifacts"]["data/processed"] == f"md5:{processed}"  # DVC's hash, not a second pass
    plots = json.loads(run(["dvc", "plots", "show", "--json"], pipeline).stdout)["data"]
    assert {"Training loss per epoch", "Precision-recall per class (val, IoU 0.5)",
            "metrics/plots/predictions_val.png"} <= set(plots)
    pr = plots["Precision-recall per class (val, IoU 0.5)"][0]["content"]  # dvc.yaml names no class:
    assert pr["encoding"]["color"]["field"] == "class"  # the template draws one line per class of the data
    assert {row["class"] for row in pr["data"]["values"]} == {"person", "cart", "shelf"}


def test_conf_edit_reruns_only_train_and_evaluate(pipeline: Path):
    edit(pipeline / "conf/train/default.yaml", "lr: 0.01", "lr: 0.02")
    out = run(["dvc", "repro"], pipeline).stdout
    assert stages_run(out) == {"compose", "train", "evaluate", "label_issues"}, out  # label_issues: the new model
    assert params_of_last_run(pipeline)["train"]["lr"] == 0.02
    diff = run(["dvc", "params", "diff", "--json"], pipeline).stdout
    lr = json.loads(diff)["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (0.01, 0.02)
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "--json", "--all"], pipeline).stdout)
    assert "metrics/metrics.json" in metrics_diff
    assert any(v.get("diff") not in (0, None) for v in metrics_diff["models/train.json"].values())


def test_exp_run_value_override_is_used_and_kept(pipeline: Path):
    out = run(["dvc", "exp", "run", "-S", "train.lr=0.005"], pipeline).stdout
    assert {"train", "evaluate"} <= stages_run(out), out
    assert yaml.safe_load((pipeline / "params.yaml").read_text())["train"]["lr"] == 0.005
    assert params_of_last_run(pipeline)["train"]["lr"] == 0.005
    lineage = json.loads((pipeline / "metrics/lineage.json").read_text())
    assert lineage["params"]["train"]["lr"] == 0.005
    # a later plain repro keeps the override instead of silently reverting it
    out = run(["dvc", "repro"], pipeline).stdout
    assert stages_run(out) == set(), out
    assert yaml.safe_load((pipeline / "params.yaml").read_text())["train"]["lr"] == 0.005
    shown = run(["dvc", "exp", "show", "--json"], pipeline).stdout
    assert "0.005" in shown


def test_exp_run_group_override_switches_the_model(pipeline: Path):
    out = run(["dvc", "exp", "run", "-S", "model=ssdlite", "-S", "train.epochs=1"], pipeline).stdout
    assert {"train", "evaluate"} <= stages_run(out), out
    used = params_of_last_run(pipeline)
    assert used["model"]["name"] == "ssdlite320_mobilenet_v3_large"
    assert used["train"]["epochs"] == 1
    assert used["experiment"]["name"] == "smoke"  # the rest of the composition is intact


def test_a_code_edit_makes_exactly_the_stages_that_run_it_stale(pipeline: Path):
    # The stages' code deps are what tests/test_architecture.py computes: prediction code only
    # evaluate runs; a task module every stage runs (DVC then skips what follows an unchanged output).
    def stale() -> set[str]:
        return set(json.loads(run(["dvc", "status", "--json"], pipeline).stdout))

    evaluation = pipeline / "src/cvrepro/learning/evaluation.py"
    evaluation.write_text(evaluation.read_text() + "\n# an edit\n")
    assert stale() == {"evaluate"}
    run(["git", "checkout", "--", "src"], pipeline)
    trainer = pipeline / "src/cvrepro/learning/trainer.py"
    trainer.write_text(trainer.read_text() + "\n# an edit\n")
    assert stale() == {"train", "label_issues"}  # label-issues' k-fold trains with it
    run(["git", "checkout", "--", "src"], pipeline)
    detection = pipeline / "src/cvrepro/tasks/detection.py"
    detection.write_text(detection.read_text() + "\n# an edit\n")
    assert stale() == {"snapshot", "split", "preprocess", "train", "evaluate", "label_issues"}


def test_a_failed_exp_run_leaves_params_and_lock_as_they_were(pipeline: Path):
    before = {name: (pipeline / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    res = run(["dvc", "exp", "run", "-S", "train.device=cuda"], pipeline, check=False)  # no CUDA here
    assert res.returncode != 0 and "the experiment failed: params.yaml is the composition" in res.stderr
    assert {name: (pipeline / name).read_bytes() for name in before} == before
    # Nothing modified or untracked; DVC removed the failed stage's own outputs before running it
    status = run(["git", "status", "--porcelain"], pipeline).stdout.splitlines()
    assert status and all(line.startswith(" D ") for line in status), status
    run(["git", "checkout", "--", "."], pipeline)
    run(["dvc", "checkout"], pipeline)
    out = run(["dvc", "repro"], pipeline)
    assert stages_run(out.stdout) == set() and "kept" not in out.stdout + out.stderr
