"""Lineage: real git in tmp_path, release lookup, artifact hashes."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from cvrepro.core.fileio import CvreproError, write_json
from cvrepro.provenance.lineage import (
    build_lineage,
    environment,
    git_state,
    sha256_dir,
)
from cvrepro.config.compose import compose
from cvrepro.config.params import config_id
from cvrepro.config.typed import typed
from cvrepro.provenance.registry import dataset_version
from helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}


def _git(cwd, *args):
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def composed() -> dict:
    """The template's params, composed from conf/: build_lineage takes a whole config (typed or as a mapping)."""
    return compose(REPO / "conf")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "code.py").write_text("print(1)\n")
    (root / ".gitignore").write_text("models/\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_git_state_clean_then_dirty(repo):
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "code.py").write_text("print(2)\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    _git(repo, "checkout", "--", "code.py")
    (repo / "new.py").write_text("")  # untracked, not ignored: the run may depend on it
    assert git_state(repo)["dirty"] is True
    (repo / "new.py").unlink()
    (repo / "models").mkdir()
    (repo / "models" / "w.pt").write_bytes(b"x")  # ignored output: still clean
    assert git_state(repo)["dirty"] is False


def test_git_state_exclude(repo):
    (repo / "dvc.lock").write_text("a\n")
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-q", "-m", "lock")
    (repo / "dvc.lock").write_text("b\n")
    assert git_state(repo)["dirty"] is True
    assert git_state(repo, exclude=["dvc.lock"])["dirty"] is False
    (repo / "code.py").write_text("changed\n")
    assert git_state(repo, exclude=["dvc.lock"])["dirty"] is True


def test_git_state_subdirectory_and_no_commit(repo, tmp_path):
    (repo / "sub").mkdir()
    assert git_state(repo / "sub")["commit"] == _git(repo, "rev-parse", "HEAD")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _git(fresh, "init", "-q")
    assert git_state(fresh) == {"commit": None, "dirty": False}


def test_git_state_outside_repo(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    # make sure no enclosing directory of tmp_path is a work tree
    probe = subprocess.run(["git", "-C", str(outside), "rev-parse"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("tmp_path lies inside a git work tree")
    assert git_state(outside) == {"commit": None, "dirty": None}


def _release(root, version, snapshot_id):
    """A dataset release as `cvrepro release dataset` leaves it: the record committed, an annotated tag."""
    write_json(root / "data" / "releases" / f"{version}.json", {"version": version, "snapshot_id": snapshot_id})
    _git(root, "add", "data/releases")
    _git(root, "commit", "-q", "-m", f"Release {version}")
    _git(root, "tag", "-a", version, "-m", version)


def test_dataset_version_comes_from_tagged_records(repo, tmp_path):
    assert dataset_version(tmp_path, "sha256:a") is None  # not a git repository
    assert dataset_version(repo, "sha256:a") is None  # no releases
    _release(repo, "DS-0.1.0", "sha256:a")
    _release(repo, "DS-0.2.0", "sha256:b")
    _release(repo, "DS-0.10.0", "sha256:b")  # numeric, not lexical, ordering
    _release(repo, "DS-0.9.1", "sha256:b")
    assert dataset_version(repo, "sha256:a") == "DS-0.1.0"
    assert dataset_version(repo, "sha256:b") == "DS-0.10.0"
    assert dataset_version(repo, "sha256:c") is None
    # A record written but never tagged is not a release; editing a record after its tag changes nothing.
    write_json(repo / "data" / "releases" / "DS-0.11.0.json", {"version": "DS-0.11.0", "snapshot_id": "sha256:c"})
    write_json(repo / "data" / "releases" / "DS-0.1.0.json", {"version": "DS-0.1.0", "snapshot_id": "sha256:z"})
    assert dataset_version(repo, "sha256:c") is None and dataset_version(repo, "sha256:a") == "DS-0.1.0"
    _release(repo, "DS-0.12.0", "sha256:d")
    _git(repo, "tag", "-a", "DS-0.13.0", "-m", "a tag whose commit has no record")
    with pytest.raises(CvreproError, match="DS-0.13.0"):
        dataset_version(repo, "sha256:a")


def test_environment_versions():
    env = environment()
    assert re.match(r"^3\.\d+\.\d+", env["python"])
    for k in ("torch", "torchvision", "dvc", "numpy", "pycocotools", "faster-coco-eval"):
        assert isinstance(env[k], str) and env[k]
    assert isinstance(env["torch_num_threads"], int) and env["torch_num_threads"] >= 1
    assert env["platform"]
    json.dumps(env)


def _tree(root):
    d = root / "data" / "processed"
    (d / "sub").mkdir(parents=True)
    (d / "train.npz").write_bytes(b"train" * 100)
    (d / "sub" / "val.npz").write_bytes(b"val")
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "model.pt").write_bytes(os.urandom(4096))
    return d


def test_directory_hash_stable_and_content_sensitive(tmp_path):
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    expected = hashlib.sha256(
        json.dumps(
            [["sub/val.npz", hashlib.sha256(b"val").hexdigest()],
             ["train.npz", hashlib.sha256(b"train" * 100).hexdigest()]],
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert sha256_dir(a) == sha256_dir(b) == expected  # location-independent
    (b / "sub" / "val.npz").write_bytes(b"VAL")
    assert sha256_dir(a) != sha256_dir(b)
    (b / "sub" / "val.npz").write_bytes(b"val")
    (b / "sub" / "val.npz").rename(b / "sub" / "val2.npz")  # a rename changes it too
    assert sha256_dir(a) != sha256_dir(b)


def test_build_lineage(repo, composed):
    processed = _tree(repo)
    _release(repo, "DS-1.0.0", "sha256:abc")
    params = {**composed, "experiment": {"name": "C-01"}, "train": {**composed["train"], "lr": 0.01}}
    metrics = {"AP": 0.5}
    rec = build_lineage(
        repo, params, {"snapshot_id": "sha256:abc"}, metrics,
        [repo / "models" / "model.pt", "data/processed"], {"global": 7},
        extra={"split": "val"},
    )
    assert re.fullmatch(r"[0-9a-f]{32}", rec["run_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["time_utc"])
    assert rec["code"]["commit"] == _git(repo, "rev-parse", "HEAD")
    assert rec["code"]["dirty"] is True  # data/processed is untracked
    assert rec["dataset"] == {"version": "DS-1.0.0", "snapshot_id": "sha256:abc"}
    assert rec["config_id"] == config_id(params)
    assert rec["seeds"] == {"global": 7} and rec["params"] == params and rec["metrics"] == metrics
    assert rec["artifacts"]["models/model.pt"] == hashlib.sha256((repo / "models" / "model.pt").read_bytes()).hexdigest()
    assert rec["artifacts"]["data/processed"] == sha256_dir(processed)
    assert rec["extra"] == {"split": "val"}
    assert rec["environment"]["torch"]
    json.dumps(rec)
    params["train"]["lr"] = 1.0
    assert rec["params"]["train"]["lr"] == 0.01  # a copy, not the caller's dict

    other = build_lineage(repo, typed(composed), {"snapshot_id": "sha256:zzz"}, {}, [], {})
    assert other["dataset"]["version"] is None and "extra" not in other
    assert other["run_id"] != rec["run_id"]
    assert other["params"] == composed and other["config_id"] == config_id(composed)  # typed: recorded as written


def test_build_lineage_errors(tmp_path, composed):
    with pytest.raises(CvreproError, match="snapshot_id"):
        build_lineage(tmp_path, composed, {}, {}, [], {})
    with pytest.raises(CvreproError, match="missing.pt"):
        build_lineage(tmp_path, composed, {"snapshot_id": "s"}, {}, ["missing.pt"], {})
    with pytest.raises(CvreproError, match="train.lr"):  # a config the schema refuses is named before any work
        build_lineage(tmp_path, {**composed, "train": {**composed["train"], "lr": "fast"}}, {"snapshot_id": "s"},
                      {}, [], {})


def test_dir_hash_is_dvcs_hash_of_a_stage_output(tmp_path):
    """A stage output's hash is the one DVC wrote to dvc.lock (read from DVC's state, not re-hashed);
    a directory that is no stage output falls back to sha256_dir."""
    import yaml

    from cvrepro.provenance.lineage import dir_hash, dvc_hash

    _git(tmp_path, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: mkdir -p out && echo a > out/a.txt && echo b > out/b.txt\n    outs: [out]\n")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=tmp_path, check=True)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["make"]["outs"][0]
    assert dvc_hash(tmp_path, "out") == dir_hash(tmp_path, "out") == f"md5:{lock['md5']}"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert dvc_hash(tmp_path, "other") is None
    assert dir_hash(tmp_path, "other") == sha256_dir(tmp_path / "other")
    (tmp_path / "out" / "a.txt").write_text("changed")
    assert dvc_hash(tmp_path, "out") != f"md5:{lock['md5']}"  # the state is keyed by mtime/size: no stale hash
