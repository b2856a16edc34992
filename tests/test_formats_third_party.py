"""Interoperability with files a real third-party converter writes and reads: globox 2.9.0 (PyPI, pinned in the
`test` extra). Every detection format round-trips box for box within 0.5 px in both directions, the class order
survives, and boxes on the image edge (xmin = 0, xmax = width) are accepted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cvrepro.formats.transfer import export_dataset, import_dataset

globox = pytest.importorskip("globox")  # test-only dependency

CLASSES = ["zebra", "apple", "mango"]  # not sorted: the order must survive every trip
IMAGES = {"a.jpg": (64, 48), "b.jpg": (50, 50), "c.jpg": (33, 21)}
TRUTH = {  # image -> [(label, xmin, ymin, xmax, ymax)] in the continuous pixel frame
    "a.jpg": [("zebra", 0, 0, 20.5, 13.25), ("mango", 40, 30, 64, 48)],  # both on image edges
    "b.jpg": [("apple", 3, 4, 5, 6), ("zebra", 10.5, 11.75, 30.25, 40)],
    "c.jpg": [],
}


def images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in IMAGES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name, quality=95)


def truth_set() -> "globox.AnnotationSet":
    return globox.AnnotationSet([
        globox.Annotation(name, IMAGES[name], [globox.BoundingBox(label=lb, xmin=x0, ymin=y0, xmax=x1, ymax=y1)
                                               for lb, x0, y0, x1, y1 in TRUTH[name]])
        for name in IMAGES])


def ours(root: Path) -> dict[str, list[tuple]]:
    """image file name -> [(class, xmin, ymin, xmax, ymax)] of the project's index."""
    index = json.loads((root / "data/labels/annotations.json").read_text())
    names = {c["id"]: c["name"] for c in index["categories"]}
    out: dict[str, list[tuple]] = {im["file_name"].rsplit("/", 1)[-1]: [] for im in index["images"]}
    files = {im["id"]: im["file_name"].rsplit("/", 1)[-1] for im in index["images"]}
    for a in index["annotations"]:
        x, y, w, h = a["bbox"]
        out[files[a["image_id"]]].append((names[a["category_id"]], x, y, x + w, y + h))
    return out


def theirs(annotations: "globox.AnnotationSet") -> dict[str, list[tuple]]:
    return {Path(a.image_id).name: [(b.label, *b.ltrb) for b in a.boxes] for a in annotations}


def assert_same_boxes(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        g, w = sorted(got[name]), sorted(want[name])
        assert [b[0] for b in g] == [b[0] for b in w], name
        assert np.allclose([b[1:] for b in g], [b[1:] for b in w], atol=0.5, rtol=0) if w else not g, name


def class_order(root: Path) -> list[str]:
    return [c["name"] for c in json.loads((root / "data/labels/annotations.json").read_text())["categories"]]


def test_voc_written_by_globox_imports_and_our_export_reads_back_in_globox(project: Path, tmp_path: Path):
    src = tmp_path / "voc"
    images(src / "JPEGImages")
    truth_set().save_pascal_voc(src / "Annotations")
    (src / "labels.txt").write_text("".join(f"{n}\n" for n in CLASSES))  # globox writes no class list
    import_dataset("voc", src, root=project, dvc_add=False)
    assert_same_boxes(ours(project), theirs(truth_set()))
    assert class_order(project) == CLASSES

    out = tmp_path / "out"
    export_dataset("voc", out, root=project)
    assert_same_boxes(theirs(globox.AnnotationSet.from_pascal_voc(out / "Annotations")), theirs(truth_set()))
    assert (out / "classes.txt").read_text().split() == CLASSES


def test_coco_written_by_globox_imports_and_our_export_reads_back_in_globox(project: Path, tmp_path: Path):
    src = tmp_path / "coco"
    images(src / "images")
    truth_set().save_coco(src / "annotations.json", label_to_id={n: i + 1 for i, n in enumerate(CLASSES)},
                          imageid_to_id={n: i + 1 for i, n in enumerate(IMAGES)})
    import_dataset("coco", src, root=project, dvc_add=False)
    assert_same_boxes(ours(project), theirs(truth_set()))
    assert class_order(project) == CLASSES

    out = tmp_path / "out"
    export_dataset("coco", out, root=project)
    back = globox.AnnotationSet.from_coco(out / "annotations/instances_default.json")
    assert_same_boxes(theirs(back), theirs(truth_set()))


def test_yolo_written_by_globox_imports_and_our_export_reads_back_in_globox(project: Path, tmp_path: Path):
    src = tmp_path / "yolo"
    images(src / "obj_train_data")  # darknet's layout, as CVAT's "YOLO 1.1" export: labels beside the images
    truth_set().save_yolo_darknet(src / "obj_train_data", label_to_id={n: i for i, n in enumerate(CLASSES)})
    (src / "obj.names").write_text("".join(f"{n}\n" for n in CLASSES))
    import_dataset("yolo", src, root=project, dvc_add=False)
    assert_same_boxes(ours(project), theirs(truth_set()))
    assert class_order(project) == CLASSES
    index = json.loads((project / "data/labels/annotations.json").read_text())
    assert {im["subset"] for im in index["images"]} == {"train"}

    out = tmp_path / "out"
    export_dataset("yolo", out, root=project)
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    assert names == dict(enumerate(CLASSES))  # Ultralytics' layout: the subset train is images/train, labels/train
    back = globox.AnnotationSet.from_yolo_darknet(out / "labels/train/obj_train_data",
                                                  image_folder=out / "images/train/obj_train_data")
    back = back.map_labels({str(i): n for i, n in names.items()})
    assert_same_boxes(theirs(back), theirs(truth_set()))
