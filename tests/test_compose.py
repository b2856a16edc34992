"""Hydra composition of conf/ into params.yaml, and the rule that keeps explicit overrides."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from cvrepro.config.compose import check, compose, is_composition, write_params
from cvrepro.config.params import config_id

from helpers import REPO, commit_all, edit, run, tiny_conf

GROUPS = sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir())


def test_committed_params_equal_the_composition_of_conf():
    # main must never hold a params.yaml that differs from composing conf/.
    assert check(REPO) == []


@pytest.mark.parametrize(
    "override", [f"{g}={p.stem}" for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]
)
def test_every_config_option_composes(override):
    cfg = compose(REPO / "conf", [override])
    for key in ("task", "dataset", "split", "preprocess", "model", "train", "evaluate", "experiment"):
        assert key in cfg, f"{override}: missing {key}"
    assert cfg["experiment"]["name"]


def test_group_switch_and_value_override():
    cfg = compose(REPO / "conf", ["model=ssdlite", "train.lr=0.5"])
    assert cfg["model"]["name"] == "ssdlite320_mobilenet_v3_large"
    assert cfg["train"]["lr"] == 0.5


def test_config_id_names_the_experiment_and_changes_with_any_value():
    base = compose(REPO / "conf")
    assert config_id(base) == config_id(compose(REPO / "conf"))
    assert config_id(base).startswith(base["experiment"]["name"] + "+")
    assert config_id(base) != config_id(compose(REPO / "conf", ["train.lr=0.02"]))


def test_conf_edit_is_composed_when_params_hold_a_composition(project: Path):
    # params.yaml carries compose's stamp: a conf/ edit is composed, even with no dvc.lock and no commit
    assert is_composition((project / "params.yaml").read_text())
    conf = project / "conf/train/default.yaml"
    conf.write_text(conf.read_text().replace("lr: 0.01", "lr: 0.03"))
    assert write_params(project, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.03
    conf.write_text(conf.read_text().replace("lr: 0.03", "lr: 0.04"))  # again, before any commit
    assert write_params(project, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.04


def test_explicit_override_is_kept_and_reported(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = 0.123  # what `dvc exp run -S train.lr=0.123` writes (its dumper drops comments)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    said: list[str] = []
    assert not write_params(project, log=said.append)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.123
    assert any("train.lr: 0.01 in conf/ -> 0.123 kept" in line for line in said)
    # --force resets it
    assert write_params(project, force=True, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.01


def test_a_hand_edit_under_the_stamp_is_an_override(project: Path):
    edit(project / "params.yaml", "lr: 0.01", "lr: 0.2")  # the stamp line stays, the YAML no longer matches it
    assert not is_composition((project / "params.yaml").read_text())
    assert not write_params(project, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.2


def test_an_override_recorded_in_dvc_lock_is_still_an_override(project: Path):
    # After `dvc exp run -S` kept the override, dvc.lock records the overridden file as compose's output;
    # `dvc exp run -f` / `dvc repro -f` then run compose again on the same bytes: still kept.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 4
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    md5 = hashlib.md5((project / "params.yaml").read_bytes()).hexdigest()
    (project / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"compose": {"cmd": "cvrepro compose", "outs": [{"path": "params.yaml", "md5": md5}]}}}
    ))
    assert not write_params(project, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 4


def test_same_values_without_the_stamp_are_stamped(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(params))  # same values, rewritten by another dumper
    assert write_params(project, log=lambda *_: None)
    assert is_composition((project / "params.yaml").read_text())  # a later conf/ edit is composed again


def test_an_unstamped_committed_file_is_a_composition(project: Path):
    # a params.yaml from before the stamp: byte for byte the committed file counts as the last composition
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    commit_all(project, "template")
    conf = project / "conf/train/default.yaml"
    conf.write_text(conf.read_text().replace("lr: 0.01", "lr: 0.03"))
    assert write_params(project, log=lambda *_: None)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.03


def test_without_a_stamp_a_file_that_differs_from_the_commit_is_an_override(project: Path):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "template"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert not write_params(project, log=lambda *_: None)  # differs from HEAD: an override
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 1


@pytest.mark.slow
def test_dvc_exp_run_force_keeps_every_override(project: Path):
    """The real `dvc exp run -S ...`, then the same with -f (which reruns compose on bytes dvc.lock already
    records): the stages run with the overrides both times."""
    from cvrepro.core.fileio import read_json

    tiny_conf(project)
    run(["cvrepro", "demo", "--images", "12", "--seed", "2"], project)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    commit_all(project, "demo")
    overrides = ["-S", "split.seed=7", "-S", "train.epochs=4"]
    for force in ([], ["-f"]):
        res = run(["dvc", "exp", "run", *force, *overrides, "split"], project)
        said = res.stdout + res.stderr
        assert "split.seed: 42 in conf/ -> 7 kept" in said and "-> 42" not in said, said
        params = yaml.safe_load((project / "params.yaml").read_text())
        assert (params["split"]["seed"], params["train"]["epochs"]) == (7, 4), force
        assert read_json(project / "data/splits/splits.json")["seed"] == 7, force  # what the split stage ran with


def test_cli_check_fails_on_a_stale_params_file(project: Path):
    assert run(["cvrepro", "compose", "--check"], project).returncode == 0
    conf = project / "conf/train/default.yaml"
    conf.write_text(conf.read_text().replace("epochs: 12", "epochs: 13"))
    res = run(["cvrepro", "compose", "--check"], project, check=False)
    assert res.returncode == 1
    assert "train.epochs" in res.stdout


def test_a_failed_experiment_puts_params_and_lock_back(project: Path, monkeypatch):
    from cvrepro.config.compose import EXP_BASELINE_ENV, undo_failed_experiment

    committed = (project / "params.yaml").read_bytes()
    commit_all(project, "template")
    edit(project / "params.yaml", "lr: 0.01", "lr: 0.5")  # what `dvc exp run -S train.lr=0.5` wrote
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # the stages that finished before the failure
    monkeypatch.delenv(EXP_BASELINE_ENV, raising=False)
    assert not undo_failed_experiment(project, log=lambda *_: None)  # plain `dvc repro`: nothing to undo
    assert (project / "dvc.lock").exists()
    monkeypatch.setenv(EXP_BASELINE_ENV, run(["git", "rev-parse", "HEAD"], project).stdout.strip())
    lines = []
    assert undo_failed_experiment(project, log=lines.append)
    assert (project / "params.yaml").read_bytes() == committed  # the composition of conf/, byte for byte
    assert not (project / "dvc.lock").exists()  # the baseline commit had none
    assert "params.yaml is the composition of conf/ again" in lines[0]
