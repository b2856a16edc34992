"""The `cvrepro` command as a user meets it: help, exit codes, clear errors, no partial output."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run


def test_every_command_has_help(tmp_path: Path):
    out = run(["cvrepro", "--help"], tmp_path).stdout
    for command in ("demo", "compose", "config-id", "snapshot", "split", "preprocess", "train", "evaluate",
                    "release", "ls", "diff", "preflight", "labels", "import", "export", "reproduce", "rollback",
                    "predict", "label-issues", "fingerprint", "check"):
        assert command in out
        assert run(["cvrepro", command, "--help"], tmp_path).returncode == 0


def test_misuse_exits_non_zero(tmp_path: Path):
    assert run(["cvrepro", "no-such-command"], tmp_path, check=False).returncode == 2


def test_bad_annotation_exits_2_naming_file_and_field_and_writes_no_manifest(project: Path):
    run(["cvrepro", "demo", "--images", "6"], project)
    ann = project / "data/labels/annotations.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["category_id"] = 99
    ann.write_text(json.dumps(coco))
    res = run(["cvrepro", "snapshot"], project, check=False)
    assert res.returncode == 2
    assert "data/labels/annotations.json" in res.stderr
    assert f"annotation id {coco['annotations'][0]['id']}" in res.stderr and "category_id" in res.stderr
    assert not (project / "data/snapshot/manifest.json").exists()


def test_demo_refuses_to_overwrite(project: Path):
    run(["cvrepro", "demo", "--images", "3"], project)
    res = run(["cvrepro", "demo", "--images", "3"], project, check=False)
    assert res.returncode == 2 and "refusing to overwrite" in res.stderr


def test_missing_params_is_a_clear_error(tmp_path: Path):
    res = run(["cvrepro", "split"], tmp_path, check=False)
    assert res.returncode == 2 and "params.yaml" in res.stderr


def test_the_command_line_offers_the_invalid_modes_the_dataset_knows():
    from cvrepro.cli import data
    from cvrepro.dataset import index

    assert data.INVALID_MODES == index.INVALID_MODES
