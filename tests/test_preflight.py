"""`cvrepro preflight`: one test per unpinned case, a pass on a clean released state,
and the train stage's policies (strict refuses, warn records, `dvc exp run` records)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import commit_all, edit, released_project, run


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return released_project(tmp_path_factory.mktemp("preflight") / "project")


@pytest.fixture
def project(released: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(released, dest, symlinks=True)
    return dest


def preflight(root: Path, *args: str) -> tuple[int, dict[str, dict]]:
    res = run(["cvrepro", "preflight", "--json", *args], root, check=False)
    rows = json.loads(res.stdout)
    return res.returncode, {r["check"]: r for r in rows}


def only_failure(root: Path, check: str, detail: str, *args: str) -> None:
    code, rows = preflight(root, *args)
    failed = {name: r["detail"] for name, r in rows.items() if not r["ok"]}
    assert code == 1 and list(failed) == [check], failed
    assert detail in failed[check], failed[check]


def test_passes_on_a_clean_released_state(released: Path):
    code, rows = preflight(released)
    assert code == 0 and all(r["ok"] for r in rows.values()), rows
    assert rows["dataset released"]["detail"] == "the snapshot is DS-0.1.0"
    text = run(["cvrepro", "preflight"], released).stdout
    assert text.splitlines()[0].startswith("pass  code clean")


def test_refuses_uncommitted_code(project: Path):
    with (project / "src/cvrepro/stages/train.py").open("a") as f:
        f.write("# a local hack\n")
    only_failure(project, "code clean", "src/cvrepro/stages/train.py")


def test_refuses_untracked_config(project: Path):
    (project / "conf/model/mine.yaml").write_text("name: fcos_tiny\n")
    only_failure(project, "code clean", "conf/model/mine.yaml")


def test_refuses_data_that_differs_from_its_dvc_file(project: Path):
    path = project / "data/labels/annotations.json"
    path.write_text(path.read_text().replace('"person"', '"human"'))
    only_failure(project, "data pinned", "the workspace differs from data/labels.dvc")


def test_refuses_an_uncommitted_dvc_file(project: Path):
    path = project / "data/labels/annotations.json"
    path.write_text(path.read_text().replace('"person"', '"human"'))
    run(["dvc", "add", "data/labels"], project)
    code, rows = preflight(project)
    assert code == 1 and not rows["data pinned"]["ok"]
    assert rows["data pinned"]["detail"] == "data/labels.dvc not committed"


def test_refuses_an_unreleased_snapshot(project: Path):
    coco = json.loads((project / "data/labels/annotations.json").read_text())
    coco["annotations"][0]["bbox"][0] += 1
    (project / "data/labels/annotations.json").write_text(json.dumps(coco))
    run(["dvc", "repro", "split"], project)
    commit_all(project, "one box moved")
    only_failure(project, "dataset released", "is not a released DS version; newest release is DS-0.1.0")


def test_refuses_params_that_differ_from_conf(project: Path):
    edit(project / "params.yaml", "lr: 0.01", "lr: 0.5")
    commit_all(project, "hand-edited params.yaml")
    only_failure(project, "params composed", "params.yaml differs from composing conf/ at train.lr")


def test_refuses_an_unset_seed(project: Path):
    edit(project / "conf/train/default.yaml", "seed: 0", "seed: null")
    run(["cvrepro", "compose", "--force"], project)
    commit_all(project, "no seed")
    only_failure(project, "seeds set", "train.seed not an integer")


def test_refuses_a_taken_model_version(project: Path):
    run(["git", "tag", "-a", "v0.3.0", "-m", "taken"], project)
    only_failure(project, "model version free", "v0.3.0 already exists", "--version", "0.3.0")
    only_failure(project, "model version free", "v0.2.0 is not greater than the newest release v0.3.0",
                 "--version", "v0.2.0")


@pytest.mark.slow
def test_train_policies_strict_refuses_warn_records_exp_run_records(project: Path):
    path = project / "data/labels/annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][0] += 1
    path.write_text(json.dumps(coco))
    edit(project / "conf/train/default.yaml", "preflight: warn", "preflight: strict")
    run(["cvrepro", "compose", "--force"], project)
    commit_all(project, "unreleased labels, strict policy")  # data/labels.dvc is re-committed by repro
    res = run(["dvc", "repro"], project, check=False)
    assert res.returncode != 0 and "preflight refuses to train (train.preflight: strict)" in res.stdout + res.stderr
    assert not (project / "models/model.pt").exists()

    # Inside `dvc exp run` failures are recorded, not refused.
    run(["dvc", "exp", "run"], project)
    run(["dvc", "exp", "apply", run(["dvc", "exp", "ls", "--name-only"], project).stdout.split()[-1]], project)
    lineage = json.loads((project / "metrics/lineage.json").read_text())
    assert lineage["preflight"]["policy"] == "strict" and lineage["preflight"]["effective"] == "warn"
    failed = [r["check"] for r in lineage["preflight"]["checks"] if not r["ok"]]
    assert "dataset released" in failed and not lineage["preflight"]["passed"]
