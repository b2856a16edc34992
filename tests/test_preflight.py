"""`cvrepro preflight`: one test per unpinned case, a pass on a clean released state,
and the train stage's policies (strict refuses, warn records, `dvc exp run` records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvrepro.config.compose import compose
from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError
from cvrepro.provenance.preflight import for_training
from cvrepro.provenance.preflight import preflight as preflight_rows
from helpers import REPO, commit_all, edit, run, write_params

# Slow: every test but the first two builds on a project trained and released by a real `dvc repro`.


def seeded(**train) -> dict:
    params = compose(REPO / "conf")
    return {**params, "train": {**params["train"], **train}}


def test_a_null_seed_is_a_failed_row_not_an_error(tmp_path: Path):
    """The schema lets a seed be null (an unseeded run), which preflight reports; outside a git work tree only
    the seeds row is judged on its own."""
    (row,) = preflight_rows(tmp_path, seeded(seed=None), checks=("seeds set",))
    assert not row["ok"] and row["detail"] == "train.seed not an integer in params.yaml"
    (row,) = preflight_rows(tmp_path, typed(seeded(seed=3)), checks=("seeds set",))
    assert row["ok"] and row["detail"].endswith("train.seed=3")
    with pytest.raises(CvreproError, match="preflight refuses to train"):
        for_training(seeded(seed=None, preflight="strict"), tmp_path)


def test_a_params_yaml_the_schema_refuses_is_a_failed_row(tmp_path: Path):
    write_params(tmp_path, seeded(lr="fast"))
    (row,) = preflight_rows(tmp_path, checks=("seeds set",))
    assert not row["ok"] and "train.lr must be a number > 0" in row["detail"]


def preflight(root: Path, *args: str) -> tuple[int, dict[str, dict]]:
    res = run(["cvrepro", "preflight", "--json", *args], root, check=False)
    rows = json.loads(res.stdout)
    return res.returncode, {r["check"]: r for r in rows}


def only_failure(root: Path, check: str, detail: str, *args: str) -> None:
    code, rows = preflight(root, *args)
    failed = {name: r["detail"] for name, r in rows.items() if not r["ok"]}
    assert code == 1 and list(failed) == [check], failed
    assert detail in failed[check], failed[check]


@pytest.mark.slow
def test_passes_on_a_clean_released_state(released: Path):
    code, rows = preflight(released)
    assert code == 0 and all(r["ok"] for r in rows.values()), rows
    assert rows["dataset released"]["detail"] == "the snapshot is DS-0.1.0"
    text = run(["cvrepro", "preflight"], released).stdout
    assert text.splitlines()[0].startswith("pass  code clean")


@pytest.mark.slow
def test_refuses_uncommitted_code(released_copy: Path):
    with (released_copy / "src/cvrepro/stages/train.py").open("a") as f:
        f.write("# a local hack\n")
    only_failure(released_copy, "code clean", "src/cvrepro/stages/train.py")


@pytest.mark.slow
def test_refuses_untracked_config(released_copy: Path):
    (released_copy / "conf/model/mine.yaml").write_text("name: fcos_tiny\n")
    only_failure(released_copy, "code clean", "conf/model/mine.yaml")


@pytest.mark.slow
def test_refuses_data_that_differs_from_its_dvc_file(released_copy: Path):
    path = released_copy / "data/labels/annotations.json"
    path.write_text(path.read_text().replace('"person"', '"human"'))
    only_failure(released_copy, "data pinned", "the workspace differs from data/labels.dvc")


@pytest.mark.slow
def test_refuses_an_uncommitted_dvc_file(released_copy: Path):
    path = released_copy / "data/labels/annotations.json"
    path.write_text(path.read_text().replace('"person"', '"human"'))
    run(["dvc", "add", "data/labels"], released_copy)
    code, rows = preflight(released_copy)
    assert code == 1 and not rows["data pinned"]["ok"]
    assert rows["data pinned"]["detail"] == "data/labels.dvc not committed"


@pytest.mark.slow
def test_refuses_an_unreleased_snapshot(released_copy: Path):
    coco = json.loads((released_copy / "data/labels/annotations.json").read_text())
    coco["annotations"][0]["bbox"][0] += 1
    (released_copy / "data/labels/annotations.json").write_text(json.dumps(coco))
    run(["dvc", "repro", "split"], released_copy)
    commit_all(released_copy, "one box moved")
    only_failure(released_copy, "dataset released", "is not a released DS version; newest release is DS-0.1.0")


@pytest.mark.slow
def test_refuses_params_that_differ_from_conf(released_copy: Path):
    edit(released_copy / "params.yaml", "lr: 0.01", "lr: 0.5")
    commit_all(released_copy, "hand-edited params.yaml")
    only_failure(released_copy, "params composed", "params.yaml differs from composing conf/ at train.lr")


@pytest.mark.slow
def test_refuses_an_unset_seed(released_copy: Path):
    edit(released_copy / "conf/train/default.yaml", "seed: 0", "seed: null")
    run(["cvrepro", "compose", "--force"], released_copy)
    commit_all(released_copy, "no seed")
    only_failure(released_copy, "seeds set", "train.seed not an integer")


@pytest.mark.slow
def test_refuses_a_taken_model_version(released_copy: Path):
    run(["git", "tag", "-a", "v0.3.0", "-m", "taken"], released_copy)
    only_failure(released_copy, "model version free", "v0.3.0 already exists", "--version", "0.3.0")
    only_failure(released_copy, "model version free", "v0.2.0 is not greater than the newest release v0.3.0",
                 "--version", "v0.2.0")


@pytest.mark.slow
def test_train_policies_strict_refuses_warn_records_exp_run_records(released_copy: Path):
    path = released_copy / "data/labels/annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][0] += 1
    path.write_text(json.dumps(coco))
    edit(released_copy / "conf/train/default.yaml", "preflight: warn", "preflight: strict")
    run(["cvrepro", "compose", "--force"], released_copy)
    commit_all(released_copy, "unreleased labels, strict policy")  # data/labels.dvc is re-committed by repro
    res = run(["dvc", "repro"], released_copy, check=False)
    assert res.returncode != 0 and "preflight refuses to train (train.preflight: strict)" in res.stdout + res.stderr
    assert not (released_copy / "models/model.pt").exists()

    # Inside `dvc exp run` failures are recorded, not refused.
    run(["dvc", "exp", "run"], released_copy)
    run(["dvc", "exp", "apply", run(["dvc", "exp", "ls", "--name-only"], released_copy).stdout.split()[-1]], released_copy)
    lineage = json.loads((released_copy / "metrics/lineage.json").read_text())
    assert lineage["preflight"]["policy"] == "strict" and lineage["preflight"]["effective"] == "warn"
    failed = [r["check"] for r in lineage["preflight"]["checks"] if not r["ok"]]
    assert "dataset released" in failed and not lineage["preflight"]["passed"]
