"""The snapshot stage: manifest contents, snapshot_id semantics, every validation failure, the DVC listing."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvrepro import tasks
from cvrepro.config.compose import compose
from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import ANNOTATIONS, MANIFEST, RAW_DIR
from cvrepro.core.relpaths import normalize_relpath
from cvrepro.dataset import images as image_reader
from cvrepro.dataset import listing as listing_module
from cvrepro.dataset import manifest as snapshot
from cvrepro.dataset.listing import dvc_listing
from cvrepro.dataset.manifest import build_manifest
from cvrepro.stages.snapshot import run

from helpers import REPO


def _checked(manifest: dict) -> dict:
    """The stage's manifest less what the stage adds to build_manifest's (the `duplicates` entry)."""
    return {k: v for k, v in manifest.items() if k != "duplicates"}

VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"

# (file_name, format, size, seed)
IMAGES = [
    ("day/a.png", "PNG", (64, 48), 1),
    ("day/b.jpg", "JPEG", (80, 60), 2),
    ("night/c.png", "PNG", (32, 32), 3),
]


def _write_image(path: Path, fmt: str, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)


def _coco() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "day/a.png", "width": 64, "height": 48, "time_of_day": "day", "group": "g1"},
            {"id": 2, "file_name": "day/b.jpg", "width": 80, "height": 60, "time_of_day": "day", "license": 3},
            {"id": 3, "file_name": "night/c.png", "width": 32, "height": 32, "time_of_day": "night"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [50.0, 30.0, 14.0, 18.0], "area": 252, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 30], "area": 600, "iscrowd": 1},
        ],
        "categories": [{"id": 2, "name": "car", "supercategory": "vehicle"}, {"id": 1, "name": "person"}],
    }


def _write_coco(root: Path, coco: dict) -> None:
    (root / ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    (root / ANNOTATIONS).write_text(json.dumps(coco))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name, fmt, size, seed in IMAGES:
        _write_image(tmp_path / RAW_DIR / name, fmt, size, seed)
    _write_coco(tmp_path, _coco())
    return tmp_path


@functools.cache
def _composed() -> dict:
    return compose(REPO / "conf", ["task=detection"])


def _params(notes: str = "", invalid: str = "fail") -> dict:
    """The repository's composed params (task detection) with these `dataset.notes` and `dataset.invalid`."""
    params = copy.deepcopy(_composed())
    params["dataset"].update(notes=notes, invalid=invalid)
    return params


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- a valid dataset


def test_valid_dataset_manifest(root: Path):
    manifest = run(_params("first cut"), root)
    assert json.loads((root / MANIFEST).read_text()) == manifest
    assert set(manifest) == {"schema", "task", "snapshot_id", "class_map", "files", "stats", "fingerprint", "notes",
                             "duplicates"}
    assert manifest["schema"] == "cvrepro.manifest/1" and manifest["task"] == "detection"
    assert manifest["notes"] == "first cut"
    assert manifest["snapshot_id"].startswith("sha256:") and len(manifest["snapshot_id"]) == 7 + 64
    assert list(manifest["class_map"].items()) == [("1", "person"), ("2", "car")]

    files = manifest["files"]
    assert [f["path"] for f in files] == ["day/a.png", "day/b.jpg", "night/c.png"]
    a = files[0]
    assert a["image_id"] == 1 and (a["width"], a["height"]) == (64, 48)
    assert a["md5"] == _md5(root / RAW_DIR / "day/a.png")
    assert a["size"] == (root / RAW_DIR / "day/a.png").stat().st_size
    assert a["attributes"] == {"time_of_day": "day", "group": "g1"}
    assert files[1]["attributes"] == {"time_of_day": "day"}  # `license` is a standard COCO key
    reduced = [
        {"id": 10, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 11, "category_id": 2, "bbox": [50, 30, 14, 18], "iscrowd": 0},
    ]
    expected_hash = hashlib.sha256(json.dumps(reduced, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert a["labels_hash"] == expected_hash and a["objects"] == 2
    assert files[2]["objects"] == 0

    assert manifest["stats"] == {
        "images": 3,
        "objects": 3,
        "per_class": {"person": 2, "car": 1},
        "attributes": {"time_of_day": {"day": 2, "night": 1}, "group": {"g1": 1}},
        "images_without_objects": 1,
    }
    text = (root / MANIFEST).read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"  # keys sorted


def test_run_from_the_project_root_with_relative_paths(root: Path, monkeypatch):
    monkeypatch.chdir(root)
    manifest = run(_params())
    assert json.loads(MANIFEST.read_text()) == manifest
    _remove_file(root, _coco())
    with pytest.raises(CvreproError, match=r"^data/raw/night/c\.png: image id 3 \('file_name' in data/labels/annotations\.json\)"):
        run(_params())


def test_class_with_no_objects_is_counted_as_zero(root: Path):
    coco = _coco()
    coco["categories"].append({"id": 7, "name": "bicycle"})
    _write_coco(root, coco)
    assert run(_params(), root)["stats"]["per_class"]["bicycle"] == 0


def test_box_within_half_pixel_tolerance_is_accepted(root: Path):
    coco = _coco()
    coco["annotations"][0]["bbox"] = [-0.4, 0, 64.8, 48.4]  # image 1 is 64x48
    _write_coco(root, coco)
    run(_params(), root)


def _three_bad_boxes(root: Path) -> bytes:
    coco = _coco()
    coco["annotations"] += [
        {"id": 20, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 8], "iscrowd": 0},  # zero width
        {"id": 21, "image_id": 2, "category_id": 2, "bbox": [70, 10, 20, 10], "iscrowd": 0},  # past the right edge (80)
        {"id": 22, "image_id": 3, "category_id": 1, "bbox": [40, 40, 5, 5], "iscrowd": 0},  # wholly outside 32x32
    ]
    _write_coco(root, coco)
    return (root / ANNOTATIONS).read_bytes()


def test_bad_boxes_fail_the_snapshot_by_default_each_named(root: Path):
    _three_bad_boxes(root)
    with pytest.raises(CvreproError) as err:
        run(_params(), root)
    for aid in (20, 21, 22):
        assert f"annotation id {aid}" in str(err.value)
    assert "dataset.invalid: drop or clip" in str(err.value)
    assert not (root / MANIFEST).exists()


@pytest.mark.parametrize("mode, dropped, clipped", [("drop", [20, 21, 22], []), ("clip", [20, 22], [21])])
def test_dataset_invalid_drops_or_clips_lists_each_box_and_leaves_the_labels_file(root: Path, mode, dropped, clipped):
    from cvrepro.tasks.detection import accepted_index

    delivered = _three_bad_boxes(root)
    params = _params(invalid=mode)
    manifest = run(params, root)
    fixed = manifest["stats"]["snapshot_invalid"]
    assert (fixed["mode"], fixed["dropped"], fixed["clipped"]) == (mode, len(dropped), len(clipped))
    rows = {r["id"]: r for r in fixed["boxes"]}
    assert sorted(rows) == [f"annotation id {a}" for a in sorted(dropped + clipped)]
    assert rows["annotation id 21"]["file"] == "day/b.jpg" and rows["annotation id 21"]["before"] == [70, 10, 20, 10]
    if clipped:
        assert rows["annotation id 21"]["after"] == [70, 10, 10, 10] and rows["annotation id 21"]["action"] == "clipped"
    assert manifest["stats"]["objects"] == 3 + len(clipped)  # the good boxes, all of them, and the clipped one
    assert (root / ANNOTATIONS).read_bytes() == delivered  # the user's file stays as delivered
    # what preprocess trains on and evaluation scores against is what snapshot accepted
    kept = {a["id"]: a["bbox"] for a in accepted_index(params, root)["annotations"]}
    assert sorted(kept) == sorted({10, 11, 12, 20, 21, 22} - set(dropped))
    if clipped:
        assert kept[21] == [70, 10, 10, 10]
    # a different policy is a different dataset: the labels hashes (and so the snapshot id) say so
    assert manifest["snapshot_id"] != run(_params(invalid="drop" if mode == "clip" else "clip"),
                                          root)["snapshot_id"]


def test_an_unknown_invalid_mode_is_refused(root: Path):
    with pytest.raises(CvreproError, match="dataset.invalid must be one of fail, drop, clip, got 'skip'"):
        run(_params(invalid="skip"), root)


# --------------------------------------------------------------------------- snapshot_id


def _sid(root: Path, notes: str = "") -> str:
    return run(_params(notes), root)["snapshot_id"]


def test_snapshot_id_is_stable_and_ignores_notes(root: Path):
    first = _sid(root)
    assert _sid(root) == first
    assert _sid(root, notes="something else entirely") == first


def test_snapshot_id_ignores_json_formatting(root: Path):
    first = _sid(root)
    coco = _coco()
    coco["annotations"][0]["bbox"] = [0.0, 0.0, 10.0, 10.0]  # same box, written as floats
    (root / ANNOTATIONS).write_text(json.dumps(coco, indent=4))
    assert _sid(root) == first


def test_snapshot_id_is_the_sha256_of_the_canonical_content_however_it_is_fed(root: Path):
    from cvrepro.core.fileio import canonical_json

    coco = _coco()
    coco["images"][0]["place"] = "Zürich, Ørsted Park"  # not ASCII: hashed as UTF-8
    _write_coco(root, coco)
    m = build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"))
    content = {"schema": snapshot.SCHEMA, "task": "detection", "class_map": m["class_map"],
               "files": [{k: f[k] for k in snapshot.ID_KEYS} for f in m["files"]]}
    want = "sha256:" + hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()
    assert m["snapshot_id"] == want
    assert {snapshot._snapshot_id("detection", m["class_map"], m["files"], chunk) for chunk in (1, 2, 3)} == {want}


def test_snapshot_id_changes_when_a_box_moves(root: Path):
    first = _sid(root)
    coco = _coco()
    coco["annotations"][0]["bbox"] = [1, 0, 10, 10]
    _write_coco(root, coco)
    assert _sid(root) != first


def test_snapshot_id_changes_when_an_image_byte_changes(root: Path):
    first = _sid(root)
    _write_image(root / RAW_DIR / "night/c.png", "PNG", (32, 32), seed=99)
    assert _sid(root) != first


def test_snapshot_id_changes_when_the_class_map_changes(root: Path):
    first = _sid(root)
    coco = _coco()
    coco["categories"][0]["name"] = "vehicle"
    _write_coco(root, coco)
    assert _sid(root) != first


def test_snapshot_id_changes_when_an_attribute_changes(root: Path):
    first = _sid(root)
    coco = _coco()
    coco["images"][2]["time_of_day"] = "dusk"
    _write_coco(root, coco)
    assert _sid(root) != first


def test_process_pool_gives_the_same_manifest(root: Path, monkeypatch):
    serial = build_manifest(root / RAW_DIR, root / ANNOTATIONS, workers=1, task=tasks.get("detection"))
    monkeypatch.setattr(image_reader, "POOL_MIN_IMAGES", 1)
    assert build_manifest(root / RAW_DIR, root / ANNOTATIONS, workers=2, task=tasks.get("detection")) == serial


def test_symlinks_that_stay_inside_raw_are_accepted(tmp_path: Path):
    # data/raw itself may be a link to a big disk; links between images inside it are fine too.
    real_raw = tmp_path / "disk" / "raw"
    for name, fmt, size, seed in IMAGES:
        _write_image(real_raw / name, fmt, size, seed)
    (real_raw / "night/c_link.png").symlink_to("c.png")
    (tmp_path / "data").mkdir()
    (tmp_path / RAW_DIR).symlink_to(real_raw, target_is_directory=True)
    coco = _coco()
    coco["images"].append({**coco["images"][2], "id": 4, "file_name": "night/c_link.png"})
    _write_coco(tmp_path, coco)
    files = run(_params(), tmp_path)["files"]
    assert [f["path"] for f in files][-1] == "night/c_link.png"
    assert files[-1]["md5"] == files[-2]["md5"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.png", "a.png"),
        ("./day//a.png", "day/a.png"),
        ("/abs/a.png", None),
        ("C:/x/a.png", None),
        ("\\\\server\\a.png", None),
        ("day/../../a.png", None),
        ("day\\..\\..\\a.png", None),
        ("", None),
        (".", None),
    ],
)
def test_file_name_normalization(name: str, expected: str | None):
    assert normalize_relpath(name) == expected


# --------------------------------------------------------------------------- bad datasets


def _edit(field_path: tuple, value):
    """A mutation of the COCO dict setting coco[a][b][c] = value."""

    def apply(root: Path, coco: dict) -> None:
        target = coco
        for key in field_path[:-1]:
            target = target[key]
        target[field_path[-1]] = value

    return apply


def _truncate(name: str, keep: float):
    def apply(root: Path, coco: dict) -> None:
        path = root / RAW_DIR / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return apply


def _remove_file(root: Path, coco: dict) -> None:
    (root / RAW_DIR / "night/c.png").unlink()


def _garbage_file(root: Path, coco: dict) -> None:
    (root / RAW_DIR / "night/c.png").write_bytes(b"this is not an image at all" * 10)


def _symlink_outside(root: Path, coco: dict) -> None:
    outside = root / "elsewhere.png"
    _write_image(outside, "PNG", (32, 32), 3)
    target = root / RAW_DIR / "night/c.png"
    target.unlink()
    target.symlink_to(outside)


def _symlinked_folder_outside(root: Path, coco: dict) -> None:
    outside = root / "elsewhere"
    shutil.move(root / RAW_DIR / "night", outside)
    (root / RAW_DIR / "night").symlink_to(outside, target_is_directory=True)


def _duplicate(list_key: str, index: int, **changes):
    def apply(root: Path, coco: dict) -> None:
        coco[list_key].append({**coco[list_key][index], **changes})

    return apply


def _del_key(list_key: str, index: int, key: str):
    def apply(root: Path, coco: dict) -> None:
        del coco[list_key][index][key]

    return apply


def _del_top(key: str):
    def apply(root: Path, coco: dict) -> None:
        del coco[key]

    return apply


IMG = "IMG"  # placeholder: the offending image's path under root
ANN = "ANN"  # placeholder: the annotations file

BAD_CASES = {
    # 1. missing file
    "missing-file": (_remove_file, [IMG + ":night/c.png", "image id 3", "file not found"]),
    # 2. unreadable / truncated
    "garbage-bytes": (_garbage_file, [IMG + ":night/c.png", "image id 3", "unreadable"]),
    "truncated-png": (_truncate("day/a.png", 0.6), [IMG + ":day/a.png", "image id 1", "truncated"]),
    "truncated-jpeg": (_truncate("day/b.jpg", 0.6), [IMG + ":day/b.jpg", "image id 2", "truncated"]),
    # 3. boxes
    "box-past-right-edge": (_edit(("annotations", 0, "bbox"), [60, 0, 10, 10]), [ANN, "annotation id 10", "'bbox'", "outside"]),
    "box-past-bottom-edge": (_edit(("annotations", 2, "bbox"), [0, 50, 10, 11]), [ANN, "annotation id 12", "'bbox'", "outside"]),
    "box-negative-x": (_edit(("annotations", 0, "bbox"), [-1, 0, 10, 10]), [ANN, "annotation id 10", "'bbox'", "outside"]),
    "box-negative-y": (_edit(("annotations", 0, "bbox"), [0, -0.6, 10, 10]), [ANN, "annotation id 10", "'bbox'"]),
    "box-zero-width": (_edit(("annotations", 1, "bbox"), [5, 5, 0, 10]), [ANN, "annotation id 11", "'bbox'", "non-positive"]),
    "box-negative-height": (_edit(("annotations", 1, "bbox"), [5, 5, 3, -2]), [ANN, "annotation id 11", "'bbox'", "non-positive"]),
    "box-wrong-shape": (_edit(("annotations", 1, "bbox"), [5, 5, 3]), [ANN, "annotation id 11", "'bbox'"]),
    # 4. unknown category
    "unknown-category": (_edit(("annotations", 1, "category_id"), 9), [ANN, "annotation id 11", "'category_id'", "9"]),
    # 5. duplicates
    "duplicate-image-id": (_duplicate("images", 0, file_name="night/c2.png"), [ANN, "images[3]", "duplicate image id 1"]),
    "duplicate-annotation-id": (_duplicate("annotations", 0), [ANN, "annotations[3]", "duplicate annotation id 10"]),
    "duplicate-file-name": (_duplicate("images", 2, id=4), [ANN, "images[3] (image id 4)", "duplicate file_name", "night/c.png", "image id 3"]),
    "duplicate-category-id": (_duplicate("categories", 1, name="human"), [ANN, "categories[2]", "duplicate category id 1"]),
    "duplicate-category-name": (_duplicate("categories", 1, id=5), [ANN, "categories[2]", "duplicate category name 'person'"]),
    # 6. escaping data/raw
    "absolute-path": (_edit(("images", 2, "file_name"), "/etc/passwd"), [ANN, "(image id 3)", "file_name", "/etc/passwd", "escapes"]),
    "dotdot-path": (_edit(("images", 2, "file_name"), "night/../../x.png"), [ANN, "(image id 3)", "file_name", "escapes"]),
    "symlink-outside": (_symlink_outside, [IMG + ":night/c.png", "image id 3", "'file_name'", ANN, "outside"]),
    "symlinked-folder-outside": (_symlinked_folder_outside, [IMG + ":night/c.png", "image id 3", "'file_name'", "outside"]),
    # 7. other inconsistencies
    "unknown-image-id": (_edit(("annotations", 2, "image_id"), 42), [ANN, "annotation id 12", "'image_id'", "42"]),
    "width-mismatch": (_edit(("images", 1, "width"), 81), [IMG + ":day/b.jpg", "image id 2", "'width'", "81x60", "80x60"]),
    "height-mismatch": (_edit(("images", 0, "height"), 50), [IMG + ":day/a.png", "image id 1", "'height'", "64x50"]),
    "missing-image-key": (_del_key("images", 1, "width"), [ANN, "images[1]", "(image id 2)", "'width'"]),
    "missing-annotation-key": (_del_key("annotations", 0, "bbox"), [ANN, "annotations[0]", "(annotation id 10)", "'bbox'"]),
    "missing-category-key": (_del_key("categories", 1, "name"), [ANN, "categories[1]", "'name'"]),
    "missing-top-level-key": (_del_top("categories"), [ANN, "'categories'"]),
    "bad-width-type": (_edit(("images", 0, "width"), "64"), [ANN, "images[0]", "(image id 1)", "'width'"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_dataset_raises_naming_file_and_field_and_writes_nothing(root: Path, case: str):
    mutate, expected = BAD_CASES[case]
    coco = _coco()
    mutate(root, coco)
    _write_coco(root, coco)
    with pytest.raises(CvreproError) as err:
        run(_params(), root)
    message = str(err.value)
    for piece in expected:
        if piece == ANN:
            piece = str(root / ANNOTATIONS)
        elif piece.startswith(IMG + ":"):
            piece = str(root / RAW_DIR / piece[len(IMG) + 1 :])
        assert piece in message, f"{piece!r} not in {message!r}"
    assert not (root / MANIFEST).exists()


def test_malformed_json(root: Path):
    (root / ANNOTATIONS).write_text('{"images": [')
    with pytest.raises(CvreproError, match="invalid JSON") as err:
        run(_params(), root)
    assert str(root / ANNOTATIONS) in str(err.value)
    assert not (root / MANIFEST).exists()


def test_many_problems_reported_together_one_per_line(root: Path):
    coco = _coco()
    coco["annotations"][0]["bbox"] = [60, 0, 10, 10]
    coco["annotations"][1]["category_id"] = 9
    _write_coco(root, coco)
    _remove_file(root, coco)
    with pytest.raises(CvreproError) as err:
        run(_params(), root)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("3 problems")
    assert any("annotation id 10" in l and "'bbox'" in l for l in lines)
    assert any("annotation id 11" in l and "'category_id'" in l for l in lines)
    assert any("night/c.png" in l and "file not found" in l for l in lines)


def test_malformed_entry_is_reported_once_not_again_by_what_refers_to_it(root: Path):
    coco = _coco()
    del coco["images"][0]["width"]  # image 1 carries annotations 10 and 11
    del coco["categories"][1]["name"]  # category 1 is used by annotations 10 and 12
    _write_coco(root, coco)
    with pytest.raises(CvreproError) as err:
        run(_params(), root)
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and "categories[1]" in lines[1] and "images[0]" in lines[2]


def test_problem_list_is_capped(root: Path):
    coco = _coco()
    coco["annotations"] = [
        {"id": 100 + i, "image_id": 1, "category_id": 77, "bbox": [0, 0, 1, 1]} for i in range(50)
    ]
    _write_coco(root, coco)
    with pytest.raises(CvreproError) as err:
        run(_params(), root)
    lines = str(err.value).splitlines()
    assert f"stopped after the first {snapshot.MAX_PROBLEMS}" in lines[0]
    assert len(lines) == 1 + snapshot.MAX_PROBLEMS


def test_pool_stops_early_when_the_problem_list_is_full(root: Path, monkeypatch):
    monkeypatch.setattr(image_reader, "POOL_MIN_IMAGES", 1)
    coco = _coco()
    coco["images"] += [{"id": 100 + i, "file_name": f"gone/{i:03d}.png", "width": 8, "height": 8} for i in range(60)]
    _write_coco(root, coco)
    with pytest.raises(CvreproError) as err:
        build_manifest(root / RAW_DIR, root / ANNOTATIONS, workers=2, task=tasks.get("detection"))
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + snapshot.MAX_PROBLEMS and all("file not found" in l for l in lines[1:])


def test_failed_run_leaves_previous_manifest_untouched(root: Path):
    run(_params(), root)
    before = (root / MANIFEST).read_bytes()
    _remove_file(root, _coco())
    with pytest.raises(CvreproError):
        run(_params(), root)
    assert (root / MANIFEST).read_bytes() == before
    assert [p.name for p in (root / MANIFEST).parent.iterdir()] == ["manifest.json"]  # no temp files left


def test_unsupported_task_is_refused(root: Path):
    with pytest.raises(CvreproError, match="task 'keypoints' is unknown"):
        run({**_params(), "task": "keypoints"}, root)
    assert not (root / MANIFEST).exists()


# --------------------------------------------------------------------------- the DVC listing


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory) -> Path:
    """One git + DVC repo with `dvc add data/raw` done (3 s); each test gets a copy."""
    if not DVC.exists() or shutil.which("git") is None:
        pytest.skip("needs git and the venv's dvc")
    root = tmp_path_factory.mktemp("dvc_template")
    for name, fmt, size, seed in IMAGES:
        _write_image(root / RAW_DIR / name, fmt, size, seed)
    _write_coco(root, _coco())
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [str(DVC), "init", "-q"], [str(DVC), "add", "-q", str(RAW_DIR)]):
        subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True)
    return root


@pytest.fixture
def dvc_root(dvc_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(dvc_template, root, symlinks=True)
    return root


def test_dvc_listing_matches_file_md5s(dvc_root: Path):
    listing = dvc_listing(dvc_root)
    assert listing == {name: _md5(dvc_root / RAW_DIR / name) for name, *_ in IMAGES}


def test_dvc_listing_is_used_when_current(dvc_root: Path, monkeypatch):
    hashed = []
    real = image_reader.inspect_image
    monkeypatch.setattr(image_reader, "inspect_image", lambda p, want_md5: (hashed.append(want_md5), real(p, want_md5))[1])
    manifest = run(_params(), dvc_root)
    assert hashed == [False, False, False]  # every md5 came from DVC's listing
    assert {f["path"]: f["md5"] for f in manifest["files"]} == dvc_listing(dvc_root)
    # Same manifest as hashing every file ourselves.
    assert _checked(manifest) == build_manifest(dvc_root / RAW_DIR, dvc_root / ANNOTATIONS, task=tasks.get("detection"))


def test_stale_dvc_listing_falls_back_to_hashing(dvc_root: Path):
    _write_image(dvc_root / RAW_DIR / "night/new.png", "PNG", (8, 8), 5)  # added after `dvc add`
    manifest = build_manifest(dvc_root / RAW_DIR, dvc_root / ANNOTATIONS, dvc_listing={"day/a.png": "0" * 32}, task=tasks.get("detection"))
    assert manifest["files"][0]["md5"] == _md5(dvc_root / RAW_DIR / "day/a.png")
    listing = dvc_listing(dvc_root)
    assert listing_module.usable_listing(dvc_root / RAW_DIR, listing) == {}


def test_dvc_listing_absent(tmp_path: Path):
    assert dvc_listing(tmp_path) is None
    (tmp_path / "data").mkdir()
    (tmp_path / "data/raw.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  hash: md5\n  path: raw\n")
    assert dvc_listing(tmp_path) is None  # cache object missing
    (tmp_path / "data/raw.dvc").write_text(": not yaml : [")
    assert dvc_listing(tmp_path) is None


# --------------------------------------------------------------------------- the check cache (incremental snapshot)


def _inspected(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = image_reader.inspect_image
    monkeypatch.setattr(image_reader, "inspect_image", lambda p, want_md5: (seen.append(Path(p).name), real(p, want_md5))[1])
    return seen


def test_unchanged_images_are_not_opened_again(root: Path, monkeypatch):
    from cvrepro.core.paths import SNAPSHOT_CHECKS

    first = run(_params(), root)
    assert (root / SNAPSHOT_CHECKS).is_file()
    seen = _inspected(monkeypatch)
    assert run(_params(), root) == first and seen == []  # nothing decoded, same manifest
    _write_image(root / RAW_DIR / "night/c.png", "PNG", (32, 32), seed=99)  # edited
    _write_image(root / RAW_DIR / "night/d.png", "PNG", (16, 16), seed=7)  # added
    coco = _coco()
    coco["images"].append({"id": 4, "file_name": "night/d.png", "width": 16, "height": 16})
    _write_coco(root, coco)
    second = run(_params(), root)
    assert sorted(seen) == ["c.png", "d.png"]
    # exactly what checking every image gives
    assert _checked(second) == build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"))
    assert second["snapshot_id"] != first["snapshot_id"]


def test_a_file_broken_after_it_passed_is_caught(root: Path):
    run(_params(), root)
    path = root / RAW_DIR / "day/a.png"
    path.write_bytes(path.read_bytes()[:100])  # truncated: size and mtime change
    with pytest.raises(CvreproError, match="day/a.png.*truncated"):
        run(_params(), root)


def test_a_touched_file_or_a_changed_dvc_md5_is_checked_again(root: Path, monkeypatch):
    from cvrepro.core.paths import SNAPSHOT_CHECKS

    run(_params(), root)
    seen = _inspected(monkeypatch)
    path = root / RAW_DIR / "day/b.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    run(_params(), root)
    assert seen == ["b.jpg"]
    seen.clear()
    listing = {name: _md5(root / RAW_DIR / name) for name, *_ in IMAGES}
    listing["day/a.png"] = "f" * 32  # DVC says the content changed
    monkeypatch.setattr("cvrepro.stages.snapshot.dvc_listing", lambda r: listing)
    run(_params(), root)
    assert seen == ["a.png"]
    # a damaged cache file is no cache: everything is checked, nothing fails
    (root / SNAPSHOT_CHECKS).write_bytes(b"\xff\xfe garbage\nx\ty\n")
    monkeypatch.setattr("cvrepro.stages.snapshot.dvc_listing", lambda r: None)
    want = build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"))
    seen.clear()
    assert _checked(run(_params(), root)) == want
    assert sorted(seen) == ["a.png", "b.jpg", "c.png"]


def _labels_parsed(monkeypatch) -> list[str]:
    """Names the labels index each time snapshot parses it (not when it reuses the last label side)."""
    parsed: list[str] = []
    real = snapshot.load_coco
    monkeypatch.setattr(snapshot, "load_coco", lambda path, *a: (parsed.append(Path(path).name), real(path, *a))[1])
    return parsed


def test_unchanged_labels_are_not_parsed_again_and_give_what_parsing_gives(root: Path, monkeypatch):
    from cvrepro.core.paths import SNAPSHOT_CHECKS

    parsed = _labels_parsed(monkeypatch)
    first = run(_params("first"), root)
    assert parsed == ["annotations.json"] and (root / SNAPSHOT_CHECKS).with_name(snapshot.LABELS_CACHE).is_file()
    _write_image(root / RAW_DIR / "night/c.png", "PNG", (32, 32), seed=99)  # an image replaced, labels as they were
    parsed.clear()
    second = run(_params("second"), root)
    assert parsed == [] and second["notes"] == "second"
    assert _checked(second) == build_manifest(root / RAW_DIR, root / ANNOTATIONS, notes="second", task=tasks.get("detection"))
    assert second["snapshot_id"] != first["snapshot_id"]
    # what the label side is computed from changes: the labels are parsed again
    for change in (_params(invalid="clip"), _params()):
        parsed.clear()
        assert run(change, root)["snapshot_id"] == second["snapshot_id"] and parsed == ["annotations.json"]
    coco = _coco()
    coco["annotations"][0]["bbox"] = [1, 0, 10, 10]
    _write_coco(root, coco)
    parsed.clear()
    assert run(_params(), root)["snapshot_id"] != second["snapshot_id"] and parsed == ["annotations.json"]


def test_reused_labels_still_check_every_image_and_a_bad_cache_is_no_cache(root: Path, monkeypatch):
    from cvrepro.core.paths import SNAPSHOT_CHECKS

    run(_params(), root)
    (root / RAW_DIR / "day/a.png").unlink()
    with pytest.raises(CvreproError, match="day/a.png.*image id 1.*not found"):
        run(_params(), root)
    _write_image(root / RAW_DIR / "day/a.png", "PNG", (64, 48), 1)
    labels_cache = (root / SNAPSHOT_CHECKS).with_name(snapshot.LABELS_CACHE)
    want = build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"))
    parsed = _labels_parsed(monkeypatch)
    for damage in (b"{not json", b'{"format": "cvrepro.snapshot-labels/1", "key": "x", "manifest": {}}', b"[]"):
        labels_cache.write_bytes(damage)
        parsed.clear()
        assert _checked(run(_params(), root)) == want and parsed == ["annotations.json"]


def test_the_label_key_follows_the_code_of_the_dataset_and_core_packages(tmp_path: Path, monkeypatch):
    from cvrepro import tasks
    from cvrepro.dataset import labelcache

    copies = []
    for folder in labelcache.CODE_PACKAGES:
        shutil.copytree(folder, tmp_path / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(tmp_path / folder.name)
    monkeypatch.setattr(labelcache, "CODE_PACKAGES", tuple(copies))
    before = labelcache.labels_key(b"{}", tasks.get("detection"), "fail", 255)
    with (tmp_path / "core" / "fileio.py").open("a") as f:  # canonical_json lives here: labels hashes depend on it
        f.write("\n# edited\n")
    assert labelcache.labels_key(b"{}", tasks.get("detection"), "fail", 255) != before


@pytest.mark.parametrize("per_chunk", [1, 2, 1000])
def test_the_label_cache_is_written_in_pieces_that_make_one_json_document(root: Path, per_chunk: int):
    from cvrepro.dataset.labelcache import _json_chunks

    manifest = build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"))
    head = {"format": "f", "key": "k"}
    for m in (manifest, {"files": manifest["files"]}, {**manifest, "files": []}):
        assert json.loads(b"".join(_json_chunks(head, m, per_chunk))) == {**head, "manifest": m}


def test_a_task_with_labels_outside_the_index_parses_them_every_time(tmp_path: Path):
    from cvrepro import tasks
    from cvrepro.dataset.labelcache import labels_key

    assert labels_key(b"{}", tasks.get("segmentation"), "fail", 255) is None
    keys = {labels_key(b"{}", tasks.get(name), "fail", 255) for name in ("detection", "classification")}
    keys |= {labels_key(b"{} ", tasks.get("detection"), "fail", 255), labels_key(b"{}", tasks.get("detection"), "fail", 7)}
    assert len(keys) == 4 and None not in keys
    interactive = type("Interactive", (type(tasks.get("detection")),), {"__module__": "__main_without_a_file__"})()
    assert labels_key(b"{}", interactive, "fail", 255) is None


# --------------------------------------------------------------------------- the JPEG completeness check


def _jpeg(size=(64, 48)) -> bytes:
    import io

    buf = io.BytesIO()
    pixels = np.random.default_rng(5).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_jpeg_completeness_is_read_from_the_end_marker_of_the_scan():
    data = _jpeg()
    assert image_reader.jpeg_complete(data) is True
    for keep in (0.95, 0.6, 0.1):  # cut in the scan, and in the headers
        assert image_reader.jpeg_complete(data[: int(len(data) * keep)]) is False
    # An EXIF thumbnail brings its own end marker before the scan: it must not pass for the image's own
    thumbnail = b"Exif\x00\x00" + b"\xff\xd8" + b"\x00" * 16 + b"\xff\xd9"
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    with_thumb = data[:2] + app1 + data[2:]
    assert image_reader.jpeg_complete(with_thumb) is True
    assert image_reader.jpeg_complete(with_thumb[: len(with_thumb) - 40]) is False
    assert image_reader.jpeg_complete(b"\xff\xd8\x00\x00garbage") is None  # not walkable: decode instead


def test_a_png_that_passes_its_crcs_but_does_not_inflate_is_named_by_preprocess(tmp_path: Path):
    import struct
    import zlib

    from cvrepro.dataset.processed import resized

    path = tmp_path / "bad.png"
    _write_image(path, "PNG", (32, 24), 1)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4:at + 4 + length] = bytes(length)  # not a zlib stream any more
    data[at + 4 + length:at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 4 + length])))
    path.write_bytes(bytes(data))
    assert image_reader.inspect_image(str(path), False)[0] is None  # snapshot's check passes (CRCs hold)
    with pytest.raises(CvreproError, match=r"bad\.png: the image cannot be read or decoded"):
        resized(str(path), 16)
