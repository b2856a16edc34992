"""The dataset diff and its bump rules, on real demo data through the real snapshot."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from cvrepro import tasks
from cvrepro.core import vcs
from cvrepro.dataset.diff import DatasetState, dataset_diff, format_diff, iou, load_state, match_labels, truncated
from cvrepro.dataset.demo import generate_demo
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.manifest import build_manifest
from cvrepro.dataset.splits import assign


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diff")
    generate_demo(root, seed=5, n_images=12)
    return root


def state(root: Path, coco: dict | None = None, label: str = "x", seed: int = 42) -> DatasetState:
    ann = root / "data/labels/annotations.json"
    if coco is not None:
        ann = root / f"ann_{label}.json"
        ann.write_text(json.dumps(coco))
    manifest = build_manifest(root / "data/raw", ann, task=tasks.get("detection"))
    splits = {"splits": assign(manifest, seed, {"train": 0.6, "val": 0.2, "test": 0.2}, None)}
    return DatasetState(label, manifest, json.loads(ann.read_text()), splits)


def labels(root: Path) -> dict:
    return json.loads((root / "data/labels/annotations.json").read_text())


def test_same_data_is_no_change(demo):
    d = dataset_diff(state(demo, label="a"), state(demo, label="b"), tasks.of_manifest)
    assert d["required_bump"] is None and d["reason"] == "nothing changed"


def test_label_fixes_only_are_a_patch_with_counts(demo):
    coco = labels(demo)
    fixed = copy.deepcopy(coco)
    anns = fixed["annotations"]
    anns[0]["bbox"][0] += 1.5  # moved
    anns[1]["category_id"] = 3 if anns[1]["category_id"] != 3 else 1  # relabelled
    deleted = anns.pop(2)
    d = dataset_diff(state(demo, coco, "old"), state(demo, fixed, "new"), tasks.of_manifest)
    assert d["required_bump"] == "patch", d["reason"]
    assert d["labels"]["boxes"] == {"added": 0, "removed": 1, "moved": 1, "relabelled": 1}
    assert d["images"] == {"added": [], "removed": [], "modified": [], "attributes_changed": []}
    changed = {c["path"] for c in d["labels"]["changes"]}
    id_to_path = {im["id"]: im["file_name"] for im in coco["images"]}
    assert changed == {id_to_path[a["image_id"]] for a in (coco["annotations"][0], coco["annotations"][1], deleted)}
    assert sum(d["per_class_delta"].values()) == -1
    text = format_diff(d)
    assert "1 moved, 1 relabelled" in text and "patch change" in text


def test_new_box_on_an_existing_image_is_minor(demo):
    coco = labels(demo)
    more = copy.deepcopy(coco)
    im = more["images"][0]
    more["annotations"].append({"id": 10_000, "image_id": im["id"], "category_id": 1,
                                "bbox": [1, 1, 10, 20], "area": 200, "iscrowd": 0})
    d = dataset_diff(state(demo, coco, "old"), state(demo, more, "new"), tasks.of_manifest)
    assert d["required_bump"] == "minor" and "1 new labels on existing images" in d["reason"]


def test_added_image_is_minor_and_class_map_change_is_major(demo, tmp_path):
    grown = tmp_path / "grown"
    shutil.copytree(demo, grown)
    generate_demo(grown, seed=5, n_images=14, force=True)  # the demo grows by appending images
    d = dataset_diff(state(demo, label="old"), state(grown, label="new"), tasks.of_manifest)
    assert d["required_bump"] == "minor"
    assert d["images"]["added"] == ["img_000012.png", "img_000013.png"] and not d["images"]["removed"]
    renamed = labels(demo)
    renamed["categories"][0]["name"] = "pedestrian"
    d = dataset_diff(state(demo, label="old"), state(demo, renamed, "new"), tasks.of_manifest)
    assert d["required_bump"] == "major" and d["class_map"]["renamed"] == {"1": ["person", "pedestrian"]}


def test_changed_pixels_are_minor_and_split_moves_are_minor(demo, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(demo, edited)
    from PIL import Image

    path = edited / "data/raw/img_000003.png"
    with Image.open(path) as im:
        im = im.convert("RGB")
    im.putpixel((0, 0), (1, 2, 3))
    im.save(path)
    d = dataset_diff(state(demo, label="old"), state(edited, label="new"), tasks.of_manifest)
    assert d["required_bump"] == "minor" and d["images"]["modified"] == ["img_000003.png"]
    d = dataset_diff(state(demo, label="old", seed=1), state(demo, label="new", seed=2), tasks.of_manifest)
    assert d["required_bump"] == "minor" and d["split_changes"]


def test_matching_by_iou_when_ids_change():
    old = [{"id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}, {"id": 2, "category_id": 2, "bbox": [50, 50, 10, 10]}]
    new = [{"id": 7, "category_id": 2, "bbox": [51, 50, 10, 10]}, {"id": 8, "category_id": 3, "bbox": [0, 0, 10, 10]}]
    pairs, removed, added = match_labels(old, new)
    assert {(a["id"], b["id"]) for a, b in pairs} == {(1, 8), (2, 7)} and not removed and not added
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    far = [{"id": 9, "category_id": 1, "bbox": [100, 100, 5, 5]}]
    pairs, removed, added = match_labels(old[:1], far)
    assert not pairs and removed == old[:1] and added == far


def test_truncated_keeps_counts_and_cuts_lists():
    d = {"images": {"added": [f"{i}.png" for i in range(5)]}, "labels": {"boxes": {"added": 5}}}
    t = truncated(d, limit=2)
    assert t["images"]["added"][:2] == ["0.png", "1.png"] and "3 more" in t["images"]["added"][2]
    assert t["labels"]["boxes"]["added"] == 5


def test_versions_parse_bump_and_levels():
    assert vcs.parse_version("DS-1.2.3", "DS-") == (1, 2, 3) and vcs.parse_version("0.4.0", "v") == (0, 4, 0)
    for bad in ("DS-1.2", "v1.2.3x", "DS-1.2.3"):
        with pytest.raises(CvreproError, match="MAJOR.MINOR.PATCH"):
            vcs.parse_version(bad, "v")
    assert vcs.bump((1, 2, 3), "major") == (2, 0, 0) and vcs.bump((1, 2, 3), "minor") == (1, 3, 0)
    assert vcs.bump((1, 2, 3), "patch") == (1, 2, 4)
    assert vcs.bump_level((1, 2, 3), (1, 2, 3)) is None and vcs.bump_level((1, 2, 3), (1, 3, 0)) == "minor"
    assert vcs.bump_level((1, 2, 3), (2, 0, 0)) == "major" and vcs.bump_level((1, 2, 3), (1, 2, 9)) == "patch"


def task_state(root: Path, label: str, task: str, ann: str = "annotations.json") -> DatasetState:
    path = root / "data/labels" / ann
    manifest = build_manifest(root / "data/raw", path, task=tasks.get(task))
    return DatasetState(label, manifest, json.loads(path.read_text()), None, root, None)


def test_segmentation_mask_edits_are_a_patch_with_the_changed_pixel_fraction(demo, tmp_path):
    import numpy as np
    from PIL import Image

    edited = tmp_path / "edited"
    shutil.copytree(demo, edited)
    mask_path = edited / "data/labels/masks/img_000002.png"
    mask = np.array(Image.open(mask_path))
    assert mask.max() > 0
    mask[mask == mask.max()] = 0  # a reviewer erases one object class from the mask
    Image.fromarray(mask).save(mask_path)
    before = np.array(Image.open(demo / "data/labels/masks/img_000002.png"))
    d = dataset_diff(task_state(demo, "old", "segmentation"), task_state(edited, "new", "segmentation"),
                     tasks.of_manifest)
    assert d["required_bump"] == "patch", d["reason"]
    assert d["labels"]["masks_changed"] == [{"path": "img_000002.png",
                                            "changed_pixels": round(float((before != mask).mean()), 6)}]
    assert "1 images with changed masks" in format_diff(d)


def test_classification_relabels_are_a_patch(demo, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(demo, edited)
    path = edited / "data/labels/classification.json"
    coco = json.loads(path.read_text())
    ann = coco["annotations"][0]
    ann["category_id"] = 1 if ann["category_id"] != 1 else 2
    path.write_text(json.dumps(coco))
    d = dataset_diff(task_state(demo, "old", "classification", "classification.json"),
                     task_state(edited, "new", "classification", "classification.json"), tasks.of_manifest)
    assert d["required_bump"] == "patch"
    assert d["labels"]["boxes"]["relabelled"] == 1 and len(d["labels"]["images_relabelled"]) == 1


def test_mask_changes_against_a_tagged_version_read_through_dvc(project: Path):
    """The old masks come from the DVC cache at the tag, not from the work tree."""
    import numpy as np
    from PIL import Image

    from helpers import commit_all, edit, run

    edit(project / "conf/config.yaml", "- task: detection", "- task: segmentation")
    run(["cvrepro", "compose", "--force"], project)
    run(["cvrepro", "demo", "--images", "6", "--seed", "1"], project)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    run(["dvc", "repro", "snapshot"], project)
    commit_all(project, "segmentation data")
    run(["git", "tag", "-a", "DS-0.1.0", "-m", "masks"], project)
    mask_path = project / "data/labels/masks/img_000004.png"
    mask = np.array(Image.open(mask_path))
    before = mask.copy()
    mask[mask == mask.max()] = 0
    Image.fromarray(mask).save(mask_path)
    run(["dvc", "repro", "snapshot"], project)
    d = dataset_diff(load_state(project, "DS-0.1.0"), load_state(project), tasks.of_manifest)
    assert d["required_bump"] == "patch"
    assert d["labels"]["masks_changed"] == [{"path": "img_000004.png",
                                            "changed_pixels": round(float((before != mask).mean()), 6)}]


def test_the_labels_index_of_another_revision_is_read_as_recorded():
    """A tag's params.yaml need not fit today's schema (a key since removed, groups missing): diff still finds
    the labels index it names."""
    from cvrepro.dataset.diff import _annotations_file

    old = (b"task: classification\ndataset: {name: demo, retired_key: 1, annotations_by_task: "
           b"{classification: classification.json}}\n")
    assert _annotations_file(old).as_posix() == "data/labels/classification.json"
    assert _annotations_file(b"dataset: {annotations: mine.json}\n").as_posix() == "data/labels/mine.json"
    assert _annotations_file(None).as_posix() == "data/labels/annotations.json"
