"""The operating system saying no, bad text encodings, empty datasets and duplicate ids (issue #12):
one line naming the path and what to do, exit 2, no traceback, nothing written. The permission
cases run the command with every capability dropped (setpriv), since the tests run as root, to
whom permission bits do not apply otherwise."""

from __future__ import annotations

import errno
import json
import shutil
import stat
from pathlib import Path

import pytest

from helpers import run
from cvrepro import tasks
from cvrepro.cli import os_error_line
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.manifest import build_manifest

NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")


@pytest.fixture
def demo(project: Path) -> Path:
    run(["cvrepro", "demo", "--images", "6", "--seed", "1"], project)
    return project


def assert_one_line_error(res, *words: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def no_manifest(root: Path) -> bool:
    return not list((root / "data/snapshot").glob("*manifest*"))


@needs_setpriv
@pytest.mark.parametrize("target", ["data/labels/annotations.json", "data/labels"])
def test_an_unreadable_labels_file_or_folder(demo: Path, target: str):
    (demo / target).chmod(0)
    try:
        res = run([*NO_CAPS, "cvrepro", "snapshot"], demo, check=False)
    finally:
        (demo / target).chmod(0o755 if (demo / target).is_dir() else 0o644)
    assert_one_line_error(res, "data/labels", "permission denied")
    assert no_manifest(demo)


@needs_setpriv
def test_a_read_only_snapshot_folder(demo: Path):
    folder = demo / "data/snapshot"
    folder.mkdir(exist_ok=True)
    before = sorted(p.name for p in folder.iterdir())
    folder.chmod(0o555)
    try:
        res = run([*NO_CAPS, "cvrepro", "snapshot"], demo, check=False)
        debug = run([*NO_CAPS, "cvrepro", "snapshot"], demo, check=False, env={"CVREPRO_DEBUG": "1"})
        flag = run([*NO_CAPS, "cvrepro", "--debug", "snapshot"], demo, check=False)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(res, "data/snapshot/manifest.json", "permission denied")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert "Traceback" in debug.stderr and "PermissionError" in debug.stderr  # the switches show it
    assert "Traceback" in flag.stderr


def test_a_file_size_limit(demo: Path):
    """`ulimit -f` (here 1 KiB): the manifest cannot be written; no partial file is left."""
    res = run(["bash", "-c", "ulimit -f 1 && cvrepro snapshot"], demo, check=False)
    assert_one_line_error(res, "data/snapshot/manifest.json", "file too large", "ulimit -f")
    assert no_manifest(demo) and not list((demo / "data/snapshot").glob(".*.tmp"))


def test_the_read_only_and_no_space_messages_say_what_to_do():
    assert os_error_line(OSError(errno.EROFS, "Read-only file system", "data/snapshot/manifest.json")) == \
        "data/snapshot/manifest.json: read-only file system: remount it writable or work on a writable copy " \
        "(nothing was changed by the failed step)"
    assert "free some space" in os_error_line(OSError(errno.ENOSPC, "No space left on device", "models/model.pt"))


def test_a_latin1_labels_file(demo: Path):
    ann = demo / "data/labels/annotations.json"
    coco = json.loads(ann.read_text())
    coco["categories"][0]["name"] = "café"
    ann.write_bytes(json.dumps(coco, ensure_ascii=False).encode("latin-1"))
    res = run(["cvrepro", "snapshot"], demo, check=False)
    assert_one_line_error(res, "data/labels/annotations.json", "not UTF-8", "save it as UTF-8")
    assert no_manifest(demo)


def test_labels_apply_never_replaces_a_read_only_labels_file(demo: Path, tmp_path: Path):
    ann = demo / "data/labels/annotations.json"
    coco = json.loads(ann.read_text())
    a = coco["annotations"][0]
    name = next(c["name"] for c in coco["categories"] if c["id"] != a["category_id"])
    csv = tmp_path / "fix.csv"
    csv.write_text(f"image,annotation_id,action,category,x,y,w,h\n{a['image_id']},{a['id']},relabel,{name},,,,\n")
    ann.chmod(0o444)
    before = ann.read_bytes()
    res = run(["cvrepro", "labels", "apply", str(csv)], demo, check=False)
    assert_one_line_error(res, "annotations.json", "read-only", "chmod u+w")
    assert ann.read_bytes() == before and stat.S_IMODE(ann.stat().st_mode) == 0o444
    ann.chmod(0o640)  # writable again: applied, and the file keeps its mode
    run(["cvrepro", "labels", "apply", str(csv)], demo)
    assert ann.read_bytes() != before and stat.S_IMODE(ann.stat().st_mode) == 0o640


# --------------------------------------------------------------------------- empty datasets and splits


def test_an_empty_labels_file_is_refused_at_snapshot(demo: Path):
    ann = demo / "data/labels/annotations.json"
    coco = json.loads(ann.read_text())
    ann.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    res = run(["cvrepro", "snapshot"], demo, check=False)
    assert_one_line_error(res, "data/labels/annotations.json", "0 images")
    assert no_manifest(demo)


def test_an_empty_split_is_refused(project: Path):
    run(["cvrepro", "demo", "--images", "2", "--seed", "1"], project)  # 2 images, 3 splits: one is empty
    run(["cvrepro", "snapshot"], project)
    res = run(["cvrepro", "split"], project, check=False)
    assert_one_line_error(res, "split", "would hold 0 images", "of 2")
    assert not (project / "data/splits/splits.json").exists()


# --------------------------------------------------------------------------- duplicate ids


def test_duplicate_ids_are_named_as_duplicates(tmp_path: Path):
    from PIL import Image

    (tmp_path / "raw").mkdir()
    for n in ("a.png", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / "raw" / n)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": "wide", "height": 16},  # malformed first
                       {"id": 1, "file_name": "b.png", "width": 16, "height": 16}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]},
                            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 4]}],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "labels.json").write_text(json.dumps(coco))
    with pytest.raises(CvreproError) as e:
        build_manifest(tmp_path / "raw", tmp_path / "labels.json", task=tasks.get("detection"))
    text = str(e.value)
    assert "images[1] (image id 1): duplicate image id 1 (also images[0])" in text
    assert "annotations[1] (annotation id 5): duplicate annotation id 5 (also annotations[0])" in text
    assert "is not an image" not in text  # not reported as dangling
