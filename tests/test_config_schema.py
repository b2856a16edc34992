"""The typed schema of params.yaml (config/schema.py): every option of conf/ fits it, and compose refuses a
bad key or value in one line naming it, before writing anything."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import pytest
import yaml

from cvrepro.cli import main
from cvrepro.config import params as P
from cvrepro.config.compose import compose, dump, write_params
from cvrepro.config.schema import validate
from cvrepro.core.fileio import CvreproError
from cvrepro.formats.common import Dataset
from cvrepro.formats.transfer import _option_yaml
from cvrepro.tasks.defaults import render
from helpers import REPO, commit_all

CONF = REPO / "conf"
OPTIONS = [f"{g.name}={p.stem}" for g in sorted(CONF.iterdir()) if g.is_dir() for p in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("override", OPTIONS)
def test_every_option_and_experiment_fits_the_schema(override):
    assert validate(compose(CONF, [override])) == []  # compose itself raises on a problem; this names none


def test_committed_params_fit_and_are_what_compose_writes():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert validate(params) == []
    assert (REPO / "params.yaml").read_text() == dump(compose(CONF))  # validation changes no value or byte


def test_code_defaults_agree_with_conf():
    params = compose(CONF)
    assert (params["train"]["device"], params["train"]["precision"], params["train"]["cpu_isa"]) == \
        (P.DEVICE, P.PRECISION, P.CPU_ISA)
    assert (params["train"]["deterministic"], params["train"]["preflight"]) == (P.DETERMINISTIC, P.PREFLIGHT)
    assert (params["split"]["method"], params["dataset"]["invalid"]) == (P.SPLIT_METHOD, P.INVALID)
    for option in ("demo", "demo_classification"):
        assert compose(CONF, [f"dataset={option}"])["dataset"]["ignore_index"] == P.IGNORE_INDEX
    for option in ("fcos_tiny", "fcos_resnet50_fpn", "ssdlite"):
        model = compose(CONF, [f"model={option}"])["model"]
        assert (model["detections_per_img"], model["score_thresh"], model["nms_thresh"]) == \
            (P.DETECTIONS_PER_IMG, P.SCORE_THRESH, P.NMS_THRESH)
    assert params["model"]["anchor_scale"] == P.ANCHOR_SCALE
    assert params["check"] == P.CHECK and params["dataset"]["duplicates"] == P.DUPLICATES
    assert (params["evaluate"]["reproduce_tolerance"], params["evaluate"]["reproduce_tolerance_other_hardware"]) == \
        (P.REPRODUCE_TOLERANCE, P.OTHER_HARDWARE_TOLERANCE)


def test_schema_defaults_are_the_code_defaults():
    from cvrepro.config import schema

    assert dataclasses.asdict(schema.Check()) == P.CHECK
    assert dataclasses.asdict(schema.Duplicates()) == P.DUPLICATES
    train = schema.Train(**compose(CONF)["train"])
    assert (schema.Train.device, schema.Train.precision, schema.Dataset.ignore_index) == \
        (P.DEVICE, P.PRECISION, P.IGNORE_INDEX) and train.device == P.DEVICE


@pytest.mark.parametrize("override, line", [
    ("train.lr=abc", "train.lr must be a number > 0, got 'abc'"),
    ("train.lrr=0.1", "train.lrr is not a key of train (it takes: seed, epochs,"),
    ("+train.lrr=0.1", "train.lrr is not a key of train (it takes: seed, epochs,"),
    ("preprocess.size=-3", "preprocess.size must be an integer >= 1, got -3"),
    ("train.device=tpu", "train.device must be one of auto, cpu, cuda, mps, got 'tpu'"),
    ("model.widths=[1,2]", "model.widths must be a list of 4 integers >= 1"),
    ("task=segmentaton", "In 'config': Could not find 'task/segmentaton' Available options in 'task': classification"),
])
def test_compose_refuses_in_one_line_naming_the_key(tmp_path, capsys, override, line):
    shutil.copytree(CONF, tmp_path / "conf")
    assert main(["compose", "--root", str(tmp_path), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: conf/ with {override}: {line}") and err.count("\n") == 1, err
    assert not (tmp_path / "params.yaml").exists()  # nothing written


def test_an_override_written_by_dvc_is_checked_too(tmp_path):
    # `dvc exp run -S train.lr=abc` writes params.yaml itself (no stamp): the compose stage refuses it
    shutil.copytree(CONF, tmp_path / "conf")
    params = compose(CONF)
    params["train"]["lr"] = "abc"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(CvreproError, match=r"^params.yaml: train.lr must be a number > 0, got 'abc'$"):
        write_params(tmp_path, log=lambda *_: None)


def test_a_bad_override_inside_dvc_exp_run_is_undone(project, capsys, monkeypatch):
    # the compose stage of `dvc exp run -S train.lr=abc` fails; params.yaml is conf/'s composition again
    commit_all(project, "template")
    composed = (project / "params.yaml").read_text()
    params = yaml.safe_load(composed)
    params["train"]["lr"] = "abc"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "HEAD")
    assert main(["compose", "--root", str(project)]) == 2
    assert capsys.readouterr().err.endswith("error: params.yaml: train.lr must be a number > 0, got 'abc'\n")
    assert (project / "params.yaml").read_text() == composed


def test_options_written_by_import_and_fingerprint_fit(tmp_path):
    shutil.copytree(CONF, tmp_path / "conf")
    dataset = Dataset(task="detection", categories=[{"id": 1, "name": "raccoon"}], images=[])
    (tmp_path / "conf/dataset/mine.yaml").write_text(_option_yaml("mine", dataset, "coco"))
    chosen = {"preprocess": [("resize", "letterbox", "why"), ("size", 320, "why"), ("store", "jpeg", "why")],
              "model": [("anchor_scale", 2.0, "why")], "hints": [], "budget": "cpu"}
    (tmp_path / "conf/fingerprint").mkdir()
    (tmp_path / "conf/fingerprint/mine.yaml").write_text(render("mine", chosen))
    params = compose(tmp_path / "conf", ["dataset=mine"])
    assert params["preprocess"]["size"] == 320 and params["dataset"]["classes"] == ["raccoon"]
    pretrained = {**chosen, "model": [("weights_backbone", "hub:resnet50-0676ba61.pth", "why"), ("freeze", 5, "why")]}
    (tmp_path / "conf/fingerprint/mine.yaml").write_text(render("mine", pretrained))
    assert compose(tmp_path / "conf", ["dataset=mine", "model=fcos_resnet50_fpn"])["model"]["freeze"] == 5


@pytest.mark.parametrize("path, value, expect", [
    ("dataset.duplicates.label_iou", 2, "dataset.duplicates.label_iou must be a number > 0 and <= 1, got 2"),
    ("dataset.ignore_index", 0, "dataset.ignore_index must be an integer >= 1 and <= 255, got 0"),
    ("evaluate.splits", ["val", "tst"], "evaluate.splits[1] must be one of train, val, test, got 'tst'"),
    ("model.name", "fcos_tinyy", "model.name must be one of fcos_tiny,"),
    ("train.deterministic", "yes", "train.deterministic must be true or false, got 'yes'"),
    ("check.policy", "loose", "check.policy must be one of warn, strict, got 'loose'"),
    ("augment.color", {"hue": 0.9}, "augment.color.hue must be a number >= 0 and <= 0.5, got 0.9"),
])
def test_validate_names_the_key_and_what_it_takes(path, value, expect):
    params = copy.deepcopy(compose(CONF))
    *parents, leaf = path.split(".")
    node = params
    for k in parents:
        node = node[k]
    node[leaf] = value
    assert validate(params)[0].startswith(expect), validate(params)


def test_a_missing_required_key_is_named():
    params = compose(CONF)
    del params["train"]["threads"]
    assert validate(params) == ["train.threads is missing (an integer >= 1)"]


def test_the_cpu_isa_choices_are_the_levels_devices_pins():
    from cvrepro.learning.devices import CPU_ISA_LEVELS, NATIVE

    assert set(P.CPU_ISAS) == {*CPU_ISA_LEVELS, NATIVE}


def test_typed_config_is_built_once_read_only_and_keeps_the_composition():
    from cvrepro.config import schema
    from cvrepro.config.params import config_id
    from cvrepro.config.typed import typed

    params = compose(CONF)
    cfg = typed(params)
    assert typed(cfg) is cfg  # already typed: returned as is
    assert isinstance(cfg.model, schema.FcosTiny) and cfg.model.widths == params["model"]["widths"]
    assert cfg.train.device == P.DEVICE and cfg.train.lr == params["train"]["lr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.seed = 3
    assert cfg.as_dict() == params and config_id(cfg) == config_id(params)  # records hash what was composed
    cfg.as_dict()["train"]["seed"] = 99  # a copy: the typed config and its record are untouched
    assert cfg.as_dict() == params
    del params["check"]  # a params.yaml older than `check`: its defaults, and no key added to the record
    old = typed(params)
    assert old.check == schema.Check() and "check" not in old.as_dict()
    assert isinstance(typed(compose(CONF, ["model=ssdlite"])).model, schema.Ssdlite)


def test_typed_refuses_a_bad_mapping_in_one_line():
    from cvrepro.config.typed import typed

    params = compose(CONF)
    params["train"]["lr"] = "abc"
    with pytest.raises(CvreproError, match=r"^params.yaml: train.lr must be a number > 0, got 'abc'$"):
        typed(params)


def test_override_sets_dotted_keys_checks_them_and_keeps_the_record_true():
    from cvrepro.config.params import config_id
    from cvrepro.config.typed import override, typed

    cfg = typed(compose(CONF))
    changed = override(cfg, {"label_issues.k": 3, "train.epochs": 2})
    assert (changed.label_issues.k, changed.train.epochs) == (3, 2)
    assert cfg.as_dict() == compose(CONF)  # the original is untouched
    assert changed.as_dict()["label_issues"]["k"] == 3 and changed.as_dict()["train"]["epochs"] == 2
    assert config_id(changed) != config_id(cfg)  # train.epochs is a run key; the record says what ran
    assert config_id(override(cfg, {"label_issues.k": 4})) == config_id(cfg)  # label_issues is not
    with pytest.raises(CvreproError, match=r"^command line \(label_issues.k=1\): label_issues.k must be an integer >= 2, got 1$"):
        override(cfg, {"label_issues.k": 1})


def test_label_issues_command_refuses_a_bad_override_in_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "params.yaml").write_text(dump(compose(CONF)))
    monkeypatch.chdir(tmp_path)
    assert main(["label-issues", "--k", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: command line (label_issues.k=1): label_issues.k must be an integer >= 2, got 1\n", err


def test_typed_takes_a_notebooks_hydra_composition_and_read_only_views():
    from types import MappingProxyType

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cvrepro.config.typed import typed

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["train.epochs=3"])
    assert typed(cfg).train.epochs == 3 and typed(cfg).as_dict() == compose(CONF, ["train.epochs=3"])
    params = compose(CONF)
    view = MappingProxyType({k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in params.items()})
    assert typed(view).as_dict() == params
