"""Issue 21: GTO's `NAME@vX.Y.Z` tags beside our release tags, from the artifacts dvc.yaml declares (real git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvrepro.core.fileio import CvreproError
from cvrepro.provenance import gtotags
from helpers import run

ARTIFACTS = "artifacts:\n  weights:\n    path: models/model.pt\n    type: model\n  images:\n    path: data/raw\n    type: dataset\n"


def repo(tmp_path: Path, dvc_yaml: str) -> tuple[Path, str]:
    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    run(["git", "add", "dvc.yaml"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc.yaml"], tmp_path)
    return tmp_path, run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()


def test_names_come_from_dvc_yaml_by_type_and_versions_drop_the_prefix(tmp_path):
    root, commit = repo(tmp_path, ARTIFACTS)
    assert gtotags.tag_release(root, "v1.2.3", commit) == "weights@v1.2.3"
    assert gtotags.tag_release(root, "DS-0.4.1", commit) == "images@v0.4.1"
    assert run(["git", "cat-file", "-t", "images@v0.4.1"], root).stdout.strip() == "tag"  # annotated: GTO needs it
    assert gtotags.tag_release(root, "v1.2.3", commit) == "weights@v1.2.3"  # a rerun after a kill: no error


def test_no_declared_artifact_means_no_gto_tag(tmp_path):
    root, commit = repo(tmp_path, "stages: {}\n")
    assert gtotags.tag_release(root, "v0.1.0", commit) is None
    assert run(["git", "tag"], root).stdout == ""


def test_a_gto_tag_on_another_commit_is_never_moved(tmp_path):
    root, first = repo(tmp_path, ARTIFACTS)
    run(["git", "tag", "-a", "weights@v0.1.0", "-m", "by hand", first], root)
    (root / "x").write_text("x")
    run(["git", "add", "x"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], root)
    second = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    with pytest.raises(CvreproError, match=r"weights@v0.1.0 exists and names"):
        gtotags.tag_release(root, "v0.1.0", second)


def test_two_artifacts_of_one_type_are_refused(tmp_path):
    root, commit = repo(tmp_path, ARTIFACTS + "  other:\n    path: m2.pt\n    type: model\n")
    with pytest.raises(CvreproError, match="dvc.yaml: artifacts declares 2 of type model"):
        gtotags.tag_release(root, "v0.1.0", commit)
