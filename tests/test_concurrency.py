"""Two commands at once and a kill at any step (issue #12): the repository lock, the release
journal and the import swap, driven through the real CLI, git and DVC. Kills are injected
deterministically at named steps (CVREPRO_KILL_AT, core/faults.py), never by sleeping."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, commit_all, copy_template, run, tiny_conf
from cvrepro.core.lock import repo_lock, try_lock, lock_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ready(tmp_path_factory) -> Path:
    """A project ready for its first dataset release (30 demo images, data stages run and committed)."""
    root = tmp_path_factory.mktemp("ready") / "project"
    copy_template(root)
    tiny_conf(root)
    run(["dvc", "remote", "add", "--local", "-d", "tmp", str(root.parent / "remote")], root)
    run(["cvrepro", "demo", "--images", "30", "--seed", "2"], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "demo data")
    run(["dvc", "repro", "split"], root)
    commit_all(root, "snapshot and split")
    return root


def fresh(ready: Path, dest: Path) -> Path:
    shutil.copytree(ready, dest, symlinks=True)
    return dest


def tags(root: Path) -> list[str]:
    return run(["git", "tag", "--list"], root).stdout.split()


def ls(root: Path) -> list[str]:
    return [r["version"] for r in json.loads(run(["cvrepro", "ls", "--json"], root).stdout)]


def assert_one_consistent_release(root: Path, tag: str = "DS-0.1.0") -> None:
    """Exactly `tag` and its GTO tag (the template's dvc.yaml declares `dataset`), on a commit of the branch that
    holds its record; ls agrees; nothing left over."""
    gto = "dataset@v" + tag.removeprefix("DS-")
    assert tags(root) == [tag, gto]
    assert ls(root) == [tag]
    tagged = run(["git", "rev-parse", f"{tag}^{{commit}}"], root).stdout.strip()
    assert run(["git", "rev-parse", f"{gto}^{{commit}}"], root).stdout.strip() == tagged
    assert run(["git", "rev-parse", "HEAD"], root).stdout.strip() == tagged
    assert "main" in run(["git", "branch", "--contains", tagged], root).stdout
    run(["git", "cat-file", "-e", f"{tag}:data/releases/{tag}.json"], root)
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    assert not (root / ".git/cvrepro-release.json").exists()


def comparable(root: Path, tag: str = "DS-0.1.0") -> dict:
    record = json.loads(run(["git", "show", f"{tag}:data/releases/{tag}.json"], root).stdout)
    record.pop("created_utc")
    notes = run(["git", "for-each-ref", f"refs/tags/{tag}", "--format=%(contents)"], root).stdout
    files = run(["git", "ls-tree", "-r", "--name-only", tag], root).stdout
    return {"record": record, "notes": notes, "files": files}


# --------------------------------------------------------------------------- the lock


def test_the_lock_names_its_holder_and_a_waiter_gives_up_in_time(tmp_path: Path):
    run(["git", "init", "-q"], tmp_path)
    with repo_lock(tmp_path, "release dataset"):
        holder = json.loads(lock_path(tmp_path).read_text())
        res = run(["cvrepro", "doctor", "--root", str(tmp_path)], tmp_path, check=False,
                  env={"CVREPRO_LOCK_WAIT": "0.5", "CVREPRO_LOCK_HELD": ""})  # not our child
    assert res.returncode == 2
    assert f"`cvrepro release dataset` (pid {holder['pid']}, started {holder['started']})" in res.stderr
    assert "waiting for" in res.stderr and "Traceback" not in res.stderr
    assert try_lock(lock_path(tmp_path)) is not None  # released on exit


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path):
    run(["git", "init", "-q"], tmp_path)
    code = f"from cvrepro.core.lock import repo_lock\nwith repo_lock({str(tmp_path)!r}, 'x'):\n    import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert subprocess.run([str(BIN / "python"), "-c", code]).returncode == -9
    with repo_lock(tmp_path, "y", wait=0):
        pass


# Two commands at once, repeated: 3 trials in `make test`; CVREPRO_RACE_TRIALS=50 for a stress run.
RACE_TRIALS = int(os.environ.get("CVREPRO_RACE_TRIALS", "3"))


def test_two_releases_at_once_make_exactly_one(ready: Path, tmp_path: Path):
    for trial in range(RACE_TRIALS):
        root = fresh(ready, tmp_path / f"t{trial}")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        procs = [subprocess.Popen(["cvrepro", "release", "dataset"], cwd=root, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        assert sorted(rc for rc, _, _ in results) == [0, 2], results
        loser = next(err for rc, _, err in results if rc == 2)
        assert "nothing changed since DS-0.1.0" in loser or "repository is busy" in loser, loser
        assert "Traceback" not in loser
        assert_one_consistent_release(root)
        shutil.rmtree(root)


# --------------------------------------------------------------------------- a release killed at each step


@pytest.fixture(scope="module")
def reference(ready: Path, tmp_path_factory) -> dict:
    """An uninterrupted first release of `ready`, for comparison."""
    root = fresh(ready, tmp_path_factory.mktemp("reference") / "project")
    run(["cvrepro", "release", "dataset"], root)
    return comparable(root)


STEPS = [("release:before-push", "rolled back"), ("release:after-push", "rolled back"),
         ("release:after-write", "rolled back"), ("release:after-commit", "was completed"),
         ("release:after-tag", "had finished")]
# `release` repairs a kill at each step; `ls` each kind of repair (the three roll-backs are one path: one of them)
KILLS = [(step, repair, "release") for step, repair in STEPS] + \
        [(step, repair, "ls") for step, repair in STEPS if step not in ("release:before-push", "release:after-write")]


@pytest.mark.parametrize("step, repair, next_command", KILLS)
def test_a_release_killed_at_any_step_is_repaired_by_the_next_command(ready: Path, reference: dict, tmp_path: Path,
                                                                       step: str, repair: str, next_command: str):
    root = fresh(ready, tmp_path / "project")
    killed = run(["cvrepro", "release", "dataset"], root, check=False, env={"CVREPRO_KILL_AT": step})
    assert killed.returncode == -9
    if next_command == "ls":
        res = run(["cvrepro", "ls"], root)
        assert repair in res.stderr and "DS-0.1.0" in res.stderr
        if repair == "rolled back":
            assert "no releases yet" in res.stdout and tags(root) == []
            assert run(["git", "status", "--porcelain"], root).stdout == ""
            run(["cvrepro", "release", "dataset"], root)
        else:
            assert "DS-0.1.0" in res.stdout
    else:
        res = run(["cvrepro", "release", "dataset"], root)
        assert repair in res.stderr and "released DS-0.1.0" in res.stdout
    assert_one_consistent_release(root)
    assert comparable(root) == reference


def test_an_undo_never_removes_another_commit(ready: Path, tmp_path: Path):
    """Tagging fails (the tag appeared meanwhile, e.g. made by hand): the undo resets only its own commit."""
    root = fresh(ready, tmp_path / "project")
    hook = root / ".git/hooks/post-commit"  # runs between our commit and our tag
    hook.write_text("#!/bin/sh\ngit tag DS-0.1.0 HEAD~1\n")
    hook.chmod(0o755)
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    res = run(["cvrepro", "release", "dataset"], root, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert run(["git", "rev-parse", "HEAD"], root).stdout.strip() == head
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    assert not (root / ".git/cvrepro-release.json").exists()


# --------------------------------------------------------------------------- an import killed at each step


def tree_hash(*folders: Path) -> str:
    h = hashlib.sha256()
    for folder in folders:
        assert folder.is_dir(), f"{folder} is missing"
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(folder.parent).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def importing(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A project holding one dataset (tracked), a COCO source of another, and a copy of the project
    into which that source was imported uninterrupted (the "new" set every killed import is compared with)."""
    base = tmp_path_factory.mktemp("importing")
    other = base / "other"
    other.mkdir()
    run(["cvrepro", "demo", "--images", "8", "--seed", "5", "--root", str(other)], other)
    run(["cvrepro", "export", "--format", "coco", str(base / "src"), "--root", str(other)], other)
    root = copy_template(base / "project")
    run(["cvrepro", "demo", "--images", "6", "--seed", "1"], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "old data")
    done = fresh(root, base / "done")
    run(["cvrepro", "import", "coco", str(base / "src"), "--force"], done)
    return root, base / "src", done


@pytest.mark.parametrize("step, result", [("import:converted", "old"), ("import:swapped-0", "old"),
                                          ("import:swapped", "new"), ("import:before-dvc-add", "new")])
def test_an_import_killed_at_any_step_leaves_the_old_or_the_new_set(importing, tmp_path: Path, step: str,
                                                                     result: str):
    ready_root, src, done = importing
    root = fresh(ready_root, tmp_path / "project")
    sets = {"old": tree_hash(root / "data/raw", root / "data/labels")}
    parts = {"old": (tree_hash(root / "data/raw"), tree_hash(root / "data/labels"))}
    sets["new"] = tree_hash(done / "data/raw", done / "data/labels")
    parts["new"] = (tree_hash(done / "data/raw"), tree_hash(done / "data/labels"))
    assert sets["old"] != sets["new"]

    killed = run(["cvrepro", "import", "coco", str(src), "--force"], root, check=False, env={"CVREPRO_KILL_AT": step})
    assert killed.returncode == -9
    # each folder is whole, the old or the new one, never missing; the work folder is ignored
    assert tree_hash(root / "data/raw") in {parts["old"][0], parts["new"][0]}
    assert tree_hash(root / "data/labels") in {parts["old"][1], parts["new"][1]}
    assert ".import-" not in run(["git", "status", "--porcelain", "--untracked-files=all"], root).stdout
    res = run(["cvrepro", "doctor"], root)
    assert "interrupted import" in res.stderr
    assert tree_hash(root / "data/raw", root / "data/labels") == sets[result]
    assert not list((root / "data").glob(".import-*"))
    assert run(["cvrepro", "doctor"], root).stdout.startswith("nothing to repair")
    run(["cvrepro", "import", "coco", str(src), "--force"], root)  # the rerun completes
    assert tree_hash(root / "data/raw", root / "data/labels") == sets["new"]
    assert run(["dvc", "status", "data/raw.dvc", "data/labels.dvc"], root).stdout.strip() \
        == "Data and pipelines are up to date."
