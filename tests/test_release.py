"""`cvrepro release`: every refusal leaves no commit, no tag and no record; the
successes make exactly one commit and one annotated tag. Real git, real DVC, a
local DVC remote in a temporary directory."""

from __future__ import annotations

import pytest

import json
from pathlib import Path


from helpers import commit_all, run

pytestmark = pytest.mark.slow  # every test builds on a project trained and released by a real `dvc repro`


def git_facts(root: Path) -> tuple[str, str, list[str]]:
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    tags = run(["git", "tag"], root).stdout.strip()
    records = sorted(p.name for p in (root / "data/releases").glob("*")) if (root / "data/releases").exists() else []
    return head, tags, records


def refused(root: Path, args: list[str], message: str) -> None:
    before = git_facts(root)
    res = run(["cvrepro", "release", *args], root, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr, res.stderr
    assert git_facts(root) == before, "a refused release changed the repository"


def grow(root: Path, images: int = 34) -> None:
    run(["cvrepro", "demo", "--images", str(images), "--seed", "2", "--force"], root)
    run(["dvc", "repro", "split"], root)
    commit_all(root, f"{images} images")


def fix_labels(root: Path) -> None:
    path = root / "data/labels/annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][0] += 1.0
    path.write_text(json.dumps(coco, indent=2))
    run(["dvc", "repro", "split"], root)
    commit_all(root, "fix one box")


def test_first_release_record_tag_and_pushed_data(released: Path):
    record = json.loads((released / "data/releases/DS-0.1.0.json").read_text())
    manifest = json.loads((released / "data/snapshot/manifest.json").read_text())
    assert record["version"] == "DS-0.1.0" and record["snapshot_id"] == manifest["snapshot_id"]
    assert record["stats"] == manifest["stats"] and record["notes"] == "first cut"
    assert set(record["inputs"]) == {"data/raw", "data/labels", "data/snapshot/manifest.json", "data/splits/splits.json"}
    tag_message = run(["git", "tag", "-l", "--format=%(contents)", "DS-0.1.0"], released).stdout
    assert tag_message.startswith("# DS-0.1.0") and "first cut" in tag_message
    assert run(["git", "cat-file", "-t", "DS-0.1.0"], released).stdout.strip() == "tag"  # annotated
    assert run(["git", "status", "--porcelain"], released).stdout == ""
    status = run(["dvc", "status", "--cloud", "--json", "data/raw.dvc", "data/labels.dvc"], released).stdout
    assert json.loads(status) == {}, status  # the remote holds every input file
    ls = run(["cvrepro", "ls"], released).stdout
    assert ls.startswith("DS-0.1.0") and "30 images" in ls


def test_refuses_a_dirty_tree(released_copy: Path):
    (released_copy / "conf/train/default.yaml").write_text("# edited\n", encoding="utf-8")
    refused(released_copy, ["dataset"], "the git tree is dirty (conf/train/default.yaml)")


def test_refuses_a_pipeline_that_is_not_up_to_date(released_copy: Path):
    path = released_copy / "data/labels/annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"].pop()
    path.write_text(json.dumps(coco))
    run(["dvc", "add", "data/labels"], released_copy)
    commit_all(released_copy, "labels changed, pipeline not rerun")
    refused(released_copy, ["dataset"], "the pipeline is not up to date (snapshot")


def test_refuses_nothing_changed(released_copy: Path):
    refused(released_copy, ["dataset"], "nothing changed since DS-0.1.0")


def test_refuses_an_existing_or_smaller_version(released_copy: Path):
    grow(released_copy)
    refused(released_copy, ["dataset", "--version", "DS-0.1.0"], "DS-0.1.0 already exists")
    refused(released_copy, ["dataset", "--version", "0.0.9"], "DS-0.0.9 is not greater than the newest release DS-0.1.0")
    refused(released_copy, ["dataset", "--version", "banana"], "is not DS-MAJOR.MINOR.PATCH")


def test_refuses_a_smaller_bump_and_a_larger_one_without_a_reason(released_copy: Path):
    grow(released_copy)
    refused(released_copy, ["dataset", "--bump", "patch"], "a patch bump is smaller than this change needs: minor (4 images added)")
    refused(released_copy, ["dataset", "--bump", "major"], "a major bump is larger than this change needs")
    out = run(["cvrepro", "release", "dataset", "--bump", "major", "--notes", "new camera site"], released_copy).stdout
    assert "released DS-1.0.0" in out


def test_label_fix_is_a_computed_patch_and_diff_shows_it(released_copy: Path):
    fix_labels(released_copy)
    diff = json.loads(run(["cvrepro", "diff", "DS-0.1.0", "--json"], released_copy).stdout)
    assert diff["required_bump"] == "patch" and diff["labels"]["boxes"]["moved"] == 1
    record = json.loads(run(["cvrepro", "release", "dataset", "--json"], released_copy).stdout)
    assert record["version"] == "DS-0.1.1" and record["bump"] == "patch" and record["previous"] == "DS-0.1.0"
    assert record["changelog"]["labels"]["boxes"] == {"added": 0, "removed": 0, "moved": 1, "relabelled": 0}
    text = run(["cvrepro", "diff", "DS-0.1.0", "DS-0.1.1"], released_copy).stdout
    assert text.startswith("DS-0.1.0 -> DS-0.1.1: patch change") and "1 moved" in text
    assert run(["git", "log", "-1", "--format=%s"], released_copy).stdout.startswith("Release DS-0.1.1: patch")


def test_refuses_without_a_remote(released_copy: Path):
    grow(released_copy)
    run(["dvc", "remote", "default", "--local", "--unset"], released_copy)
    run(["dvc", "remote", "remove", "--local", "tmp"], released_copy)
    run(["dvc", "remote", "default", "--unset"], released_copy)  # the template's shared local default too
    commit_all(released_copy, "no default remote")
    refused(released_copy, ["dataset"], "no default DVC remote")


def test_model_release_refuses_an_unreleased_snapshot(released_copy: Path):
    grow(released_copy)
    run(["dvc", "repro"], released_copy)
    commit_all(released_copy, "trained on unreleased data")
    refused(released_copy, ["model"], "is not a released DS version; newest release is DS-0.1.0")


def test_diff_rejects_a_mixed_pair_and_unknown_model_versions(released: Path):
    res = run(["cvrepro", "diff", "DS-0.1.0", "v0.2.0"], released, check=False)
    assert res.returncode == 2 and "two dataset versions" in res.stderr and "two model releases" in res.stderr
    res = run(["cvrepro", "diff", "v0.1.0", "v0.2.0"], released, check=False)
    assert res.returncode == 2 and "models/releases/v0.1.0.json: not found at tag v0.1.0" in res.stderr
