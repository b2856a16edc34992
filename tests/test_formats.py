"""`cvrepro import` / `cvrepro export`: every format round-trips a tiny source written here, every importer
rejects a malformed source naming the file and changes nothing, and real photo folders (EXIF rotation,
grayscale, RGBA, upper-case extensions) import as the labels expect."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from helpers import copy_template, run
from cvrepro import tasks
from cvrepro.formats.transfer import export_dataset, import_dataset
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.manifest import build_manifest
from cvrepro.dataset.images import load_image_rgb


def picture(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0, **save) -> Path:
    """A small image with random pixels (so a rotation or a re-encode shows)."""
    rng = np.random.default_rng(seed)
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if bands == 1 else pixels).save(path, **save)
    return path


def load(path: Path) -> Image.Image:
    """The decoded image, its file closed."""
    with Image.open(path) as im:
        im.load()
    return im


def index(root: Path) -> dict:
    return json.loads((root / "data/labels/annotations.json").read_text())


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def do_import(fmt: str, src: Path, root: Path, **kw) -> dict:
    return import_dataset(fmt, src, root=root, dvc_add=False, **kw)


# --------------------------------------------------------------------------- sources


def coco_source(src: Path) -> dict:
    picture(src / "images/a.png", 40, 30, seed=1)
    picture(src / "images/night/b.png", 32, 32, seed=2)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30, "time_of_day": "day"},
                   {"id": 9, "file_name": "night/b.png", "width": 32, "height": 32, "time_of_day": "night"}],
        "categories": [{"id": 1, "name": "person", "supercategory": "human"}, {"id": 5, "name": "cart"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 5, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 12, "image_id": 7, "category_id": 1, "bbox": [2.5, 3.25, 10.5, 6], "area": 63.0, "iscrowd": 1},
            {"id": 13, "image_id": 9, "category_id": 1, "bbox": [31, 31, 1, 1], "area": 1, "iscrowd": 0},
        ],
    }
    (src / "annotations.json").write_text(json.dumps(coco))
    return coco


def yolo_source(src: Path) -> None:
    picture(src / "images/train/a.jpg", 40, 20, seed=3, quality=95)
    picture(src / "images/val/b.png", 25, 50, seed=4)
    picture(src / "images/val/empty.png", 10, 10, seed=5)
    (src / "labels/train").mkdir(parents=True)
    (src / "labels/val").mkdir(parents=True)
    (src / "labels/train/a.txt").write_text("0 0.5 0.5 1.0 1.0\n1 0.1234567 0.25 0.2 0.3\n")
    (src / "labels/val/b.txt").write_text("1 0.3 0.7 0.13 0.21\n\n")
    (src / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train",
                                                   "names": {0: "person", 1: "cart"}}))


def voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1), difficult in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def voc_source(src: Path) -> None:
    picture(src / "JPEGImages/001.jpg", 48, 36, seed=6)
    picture(src / "JPEGImages/002.jpg", 20, 20, seed=7)
    picture(src / "JPEGImages/003.jpg", 16, 16, seed=8)  # no XML: an image without objects
    (src / "Annotations").mkdir()
    (src / "Annotations/001.xml").write_text(voc_xml("001.jpg", 48, 36, [
        ("dog", (0, 0, 48, 36), 0), ("cat", (4, 6, 14, 20), 1)]))  # plain numbers, as CVAT/globox write them
    (src / "Annotations/002.xml").write_text(voc_xml("002.jpg", 20, 20, [("cat", (2, 3, 3, 4), 0)]))


def masks_source(src: Path, palette_mask: bool = True) -> None:
    picture(src / "images/s1.jpg", 12, 8, seed=9)
    picture(src / "images/s2.png", 6, 5, seed=10)
    m1 = np.zeros((8, 12), np.uint8)
    m1[2:5, 3:9], m1[0, 0], m1[7, 11] = 1, 255, 2
    (src / "masks").mkdir(parents=True)
    Image.fromarray(m1).save(src / "masks/s1.png")
    m2 = Image.fromarray(np.full((5, 6), 2, np.uint8)).convert("P") if palette_mask else Image.new("L", (6, 5))
    m2.save(src / "masks/s2.png")
    (src / "classes.txt").write_text("background\nroad\ncar\n")


def imagefolder_source(src: Path) -> None:
    picture(src / "dog/d1.png", 9, 9, seed=11)
    picture(src / "dog/more/d2.jpg", 10, 8, seed=12)
    picture(src / "cat/c1.png", 7, 7, seed=13)
    picture(src / "cat/.thumbs/c1.png", 3, 3, seed=22)  # hidden: skipped
    (src / "cat/notes.txt").write_text("not an image: skipped")


SOURCES = {"coco": coco_source, "yolo": yolo_source, "voc": voc_source, "masks": masks_source,
           "imagefolder": imagefolder_source}


# --------------------------------------------------------------------------- round trips


def test_coco_round_trip(project: Path, tmp_path: Path):
    coco = coco_source(tmp_path / "src")
    summary = do_import("coco", tmp_path / "src", project)
    assert summary["images"] == 2 and summary["classes"] == ["person", "cart"]
    imported = index(project)
    # source ids 1 and 5 become 1..K in source-id order; extra keys are kept
    assert imported["categories"] == [{"id": 1, "name": "person", "supercategory": "human"},
                                      {"id": 2, "name": "cart"}]
    assert (project / "data/raw/night/b.png").read_bytes() == (tmp_path / "src/images/night/b.png").read_bytes()

    export_dataset("coco", tmp_path / "out", root=project)  # the CVAT/Datumaro layout, one subset: default
    out = json.loads((tmp_path / "out/annotations/instances_default.json").read_text())
    names_in, names_out = ({c["id"]: c["name"] for c in d["categories"]} for d in (coco, out))
    assert [im for im in out["images"]] == coco["images"]
    for a_in, a_out in zip(coco["annotations"], out["annotations"], strict=True):
        assert names_in[a_in["category_id"]] == names_out[a_out["category_id"]]
        assert {k: v for k, v in a_in.items() if k != "category_id"} == \
               {k: v for k, v in a_out.items() if k != "category_id"}
    assert tree(tmp_path / "out/images/default") == tree(tmp_path / "src/images")
    first = index(project)
    do_import("coco", tmp_path / "out", project, force=True)  # our export imports back to the same index
    assert index(project) == first


def yolo_lines(path: Path) -> list[tuple[int, list[float]]]:
    return [(int(f[0]), [float(v) for v in f[1:]]) for f in map(str.split, path.read_text().splitlines()) if f]


def test_yolo_round_trip(project: Path, tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    yolo_source(src)
    do_import("yolo", src, project)
    imported = index(project)
    assert [c["name"] for c in imported["categories"]] == ["person", "cart"]
    a = next(im for im in imported["images"] if im["file_name"] == "train/a.jpg")
    boxes = [x["bbox"] for x in imported["annotations"] if x["image_id"] == a["id"]]
    assert boxes[0] == [0, 0, 40, 20]  # the whole 40x20 image, in pixels
    assert sum(1 for x in imported["annotations"] if x["category_id"] == 2) == 2  # YOLO class 1 -> id 2

    export_dataset("yolo", out, root=project)  # the source's subset train: Ultralytics' names by index
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "person", 1: "cart"}
    for rel in ("train/a.txt", "val/b.txt"):
        got, want = yolo_lines(out / "labels" / rel), yolo_lines(src / "labels" / rel)
        assert [c for c, _ in got] == [c for c, _ in want]
        assert np.allclose([v for _, v in got], [v for _, v in want], atol=1e-6, rtol=0)
    assert (out / "labels/val/empty.txt").read_text() == ""
    assert tree(out / "images") == tree(src / "images")
    # the export imports again to the same index (the image without a subset stays outside train/)
    first = index(project)
    do_import("yolo", out, project, force=True)
    assert index(project) == first


def test_coco_annotations_option_and_hidden_files(project: Path, tmp_path: Path):
    picture(tmp_path / "photos/x.png", 8, 8, seed=20)
    picture(tmp_path / "photos/.ipynb_checkpoints/x.png", 8, 8, seed=21)  # not listed, never looked at
    coco = {"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}]}
    (tmp_path / "photos/instances.json").write_text(json.dumps(coco))
    with pytest.raises(CvreproError, match="annotations.json: file not found"):
        do_import("coco", tmp_path / "photos", project)
    do_import("coco", tmp_path / "photos", project, annotations=tmp_path / "photos/instances.json")
    assert index(project)["images"] == [{"id": 1, "file_name": "x.png", "width": 8, "height": 8}]
    assert sorted(tree(project / "data/raw")) == ["x.png"]


def voc_objects(path: Path) -> list[tuple]:
    root = ET.parse(path).getroot()
    return [(o.findtext("name"), o.findtext("difficult"),
             tuple(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
            for o in root.findall("object")]


def test_voc_round_trip_is_exact_with_plain_coordinates(project: Path, tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    voc_source(src)
    do_import("voc", src, project)
    imported = index(project)
    assert [c["name"] for c in imported["categories"]] == ["cat", "dog"]  # no class list: sorted names
    first = [a for a in imported["annotations"] if a["image_id"] == 1]
    assert first[0]["bbox"] == [0, 0, 48, 36]  # xmin=0, on the left edge: accepted
    assert first[1]["bbox"] == [4, 6, 10, 14] and first[1]["difficult"] == 1
    assert next(a for a in imported["annotations"] if a["image_id"] == 2)["bbox"] == [2, 3, 1, 1]  # one pixel

    export_dataset("voc", out, root=project)
    for name in ("001.xml", "002.xml"):
        assert voc_objects(out / "Annotations" / name) == voc_objects(src / "Annotations" / name)
    assert not (out / "Annotations/003.xml").exists() or voc_objects(out / "Annotations/003.xml") == []
    assert (out / "classes.txt").read_text() == "cat\ndog\n"
    assert (out / "labelmap.txt").read_text().splitlines()[1:] == ["background:0,0,0::", "cat:128,0,0::",
                                                                   "dog:0,128,0::"]
    assert (out / "ImageSets/Main/default.txt").read_text() == "001\n002\n003\n"
    assert tree(out / "JPEGImages") == tree(src / "JPEGImages")


def test_voc_devkit_convention_is_an_option_and_edge_boxes_pass_either_way(project: Path, tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    picture(src / "JPEGImages/001.jpg", 48, 36, seed=6)
    (src / "Annotations").mkdir()
    # the devkit's 1-based inclusive pixels: 1..48 is the whole width; a 0 (a 0-based writer) is the edge too
    (src / "Annotations/001.xml").write_text(voc_xml("001.jpg", 48, 36, [
        ("dog", (1, 1, 48, 36), 0), ("cat", (5, 7, 14, 20), 0), ("cat", (0, 0, 10, 10), 0)]))
    do_import("voc", src, project, voc_coords="devkit")
    assert [a["bbox"] for a in index(project)["annotations"]] == [[0, 0, 48, 36], [4, 6, 10, 14], [0, 0, 10, 10]]
    export_dataset("voc", out, root=project, voc_coords="devkit")
    assert voc_objects(out / "Annotations/001.xml")[:2] == voc_objects(src / "Annotations/001.xml")[:2]
    # read as plain numbers, the devkit file's xmax=48 on a 48 px image is the edge, never refused
    do_import("voc", src, project, force=True)
    assert index(project)["annotations"][0]["bbox"] == [1, 1, 47, 35]


def test_voc_labelmap_and_image_sets_give_class_order_and_subsets(project: Path, tmp_path: Path):
    """The layout Datumaro 1.x and CVAT write for "PASCAL VOC 1.1" (labelmap.txt, ImageSets/Main/<subset>.txt)."""
    src = tmp_path / "src"
    voc_source(src)
    (src / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                      "dog:128,0,0::\ncat:0,128,0::\n")
    (src / "ImageSets/Main").mkdir(parents=True)
    (src / "ImageSets/Main/train.txt").write_text("001\n003\n")
    (src / "ImageSets/Main/val.txt").write_text("002\n")
    (src / "ImageSets/Main/trainval.txt").write_text("001\n002\n003\n")
    (src / "ImageSets/Main/cat_train.txt").write_text("001  1\n003 -1\n")
    do_import("voc", src, project)
    imported = index(project)
    assert [c["name"] for c in imported["categories"]] == ["dog", "cat"]  # the labelmap's order, not sorted
    assert [im.get("subset") for im in imported["images"]] == ["train", "val", "train"]
    out = tmp_path / "out"
    export_dataset("voc", out, root=project)
    assert (out / "ImageSets/Main/train.txt").read_text() == "001\n003\n"
    assert (out / "classes.txt").read_text() == "dog\ncat\n"


def test_masks_round_trip(project: Path, tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    masks_source(src)
    do_import("masks", src, project)
    imported = index(project)
    assert imported["categories"] == [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}]
    assert [im["mask_file"] for im in imported["images"]] == ["masks/s1.png", "masks/s2.png"]
    stored = load(project / "data/labels/masks/s2.png")
    assert stored.mode == "L"  # the palette mask is stored as plain 8-bit class ids

    export_dataset("masks", out, root=project)
    for name in ("s1.png", "s2.png"):
        assert np.array_equal(np.asarray(load(out / "masks" / name)), np.asarray(load(src / "masks" / name)))
    assert (out / "classes.txt").read_text().splitlines()[1:] == ["road", "car"]
    assert tree(out / "images") == tree(src / "images")


def test_imagefolder_round_trip(project: Path, tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    imagefolder_source(src)
    do_import("imagefolder", src, project)
    imported = index(project)
    assert [c["name"] for c in imported["categories"]] == ["cat", "dog"]
    names = {c["id"]: c["name"] for c in imported["categories"]}
    by_id = {im["id"]: im["file_name"] for im in imported["images"]}
    assert {by_id[a["image_id"]]: names[a["category_id"]] for a in imported["annotations"]} == \
           {"cat/c1.png": "cat", "dog/d1.png": "dog", "dog/more/d2.jpg": "dog"}
    assert all("bbox" not in a for a in imported["annotations"])

    export_dataset("imagefolder", out, root=project)
    src_images = {k: v for k, v in tree(src).items() if not k.endswith(".txt") and "/." not in k}
    assert tree(out) == src_images


# --------------------------------------------------------------------------- malformed sources


def break_yolo_fields(src: Path) -> str:
    (src / "labels/val/b.txt").write_text("1 0.3 0.7 0.13 0.21\n0 0.5 0.5 0.2\n")
    return "labels/val/b.txt, line 2"


def break_yolo_class(src: Path) -> str:
    (src / "labels/train/a.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    return "labels/train/a.txt, line 1: class index 2 out of range"


def break_yolo_range(src: Path) -> str:
    (src / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.2 0.2\n")
    return "labels/train/a.txt: line 2: box [x, y, w, h] [44, 8, 8, 4] is outside the 40x20 image (--invalid drop"


def break_voc_bndbox(src: Path) -> str:
    xml = src / "Annotations/002.xml"
    xml.write_text(xml.read_text().replace("<bndbox><xmin>2", "<box><xmin>2").replace("</ymax></bndbox>", "</ymax></box>"))
    return "Annotations/002.xml: <object> #1 (cat): missing <bndbox>"


def break_voc_class(src: Path) -> str:
    (src / "classes.txt").write_text("dog\n")
    return "Annotations/001.xml: <object> #2: unknown class 'cat'"


def break_coco_width(src: Path) -> str:
    coco = json.loads((src / "annotations.json").read_text())
    coco["annotations"][1]["bbox"] = [2, 3, -4, 5]
    (src / "annotations.json").write_text(json.dumps(coco))
    return "annotations.json: annotation id 12: box [x, y, w, h] [2, 3, -4, 5] is zero or negative size"


def break_coco_outside(src: Path) -> str:
    coco = json.loads((src / "annotations.json").read_text())
    coco["annotations"][2]["bbox"] = [30, 30, 5, 5]
    (src / "annotations.json").write_text(json.dumps(coco))
    return "annotations.json: annotation id 13: box [x, y, w, h] [30, 30, 5, 5] is outside the 32x32 image"


def break_coco_duplicate(src: Path) -> str:
    """Caught by the snapshot validation on the converted dataset, named where the file will live."""
    coco = json.loads((src / "annotations.json").read_text())
    coco["annotations"][2]["id"] = 12
    (src / "annotations.json").write_text(json.dumps(coco))
    return "data/labels/annotations.json: annotations[2]"


def break_mask_size(src: Path) -> str:
    Image.new("L", (6, 6)).save(src / "masks/s2.png")
    return "masks/s2.png: mask is 6x6 but its image"


def break_mask_value(src: Path) -> str:
    Image.fromarray(np.full((5, 6), 3, np.uint8)).save(src / "masks/s2.png")
    return "masks/s2.png: mask values [3] are not class ids 0..2"


def break_imagefolder_image(src: Path) -> str:
    (src / "dog/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return "dog/broken.jpg: unreadable"


@pytest.mark.parametrize("fmt, breaker", [
    ("yolo", break_yolo_fields), ("yolo", break_yolo_class), ("yolo", break_yolo_range),
    ("voc", break_voc_bndbox), ("voc", break_voc_class),
    ("coco", break_coco_width), ("coco", break_coco_outside), ("coco", break_coco_duplicate),
    ("masks", break_mask_size), ("masks", break_mask_value),
    ("imagefolder", break_imagefolder_image),
], ids=lambda x: getattr(x, "__name__", x))
def test_malformed_source_names_the_file_and_changes_nothing(project: Path, tmp_path: Path, fmt, breaker):
    coco_source(tmp_path / "before")
    do_import("coco", tmp_path / "before", project)
    raw, labels = tree(project / "data/raw"), tree(project / "data/labels")

    src = tmp_path / "src"
    SOURCES[fmt](src)
    expected = breaker(src)
    with pytest.raises(CvreproError) as err:
        do_import(fmt, src, project, force=True)  # even --force loses nothing on bad input
    assert expected in str(err.value)
    assert tree(project / "data/raw") == raw and tree(project / "data/labels") == labels
    assert not [p.name for p in (project / "data").iterdir() if p.name.startswith(".import")]  # no temporary left


def test_refuses_to_replace_data_without_force(project: Path, tmp_path: Path):
    voc_source(tmp_path / "voc")
    imagefolder_source(tmp_path / "folders")
    do_import("voc", tmp_path / "voc", project)
    with pytest.raises(CvreproError, match="data/raw already holds data; refusing to replace it"):
        do_import("imagefolder", tmp_path / "folders", project)
    assert index(project)["categories"][0]["name"] == "cat" and len(index(project)["images"]) == 3
    do_import("imagefolder", tmp_path / "folders", project, force=True)
    assert sorted(tree(project / "data/raw")) == ["cat/c1.png", "dog/d1.png", "dog/more/d2.jpg"]


def test_export_refuses_a_non_empty_dest_and_a_format_of_another_task(project: Path, tmp_path: Path):
    yolo_source(tmp_path / "src")
    do_import("yolo", tmp_path / "src", project)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    with pytest.raises(CvreproError, match="not an empty directory"):
        export_dataset("coco", tmp_path / "full", root=project)
    assert tree(tmp_path / "full") == {"keep.txt": b"mine"}
    with pytest.raises(CvreproError, match="export --format masks: .* holds a detection dataset, not segmentation"):
        export_dataset("masks", tmp_path / "m", root=project)
    with pytest.raises(CvreproError, match="holds a detection dataset, not classification"):
        export_dataset("imagefolder", tmp_path / "f", root=project)
    assert not (tmp_path / "m").exists() and not (tmp_path / "f").exists()
    (tmp_path / "empty").mkdir()
    export_dataset("coco", tmp_path / "empty", root=project)  # an empty folder is fine
    assert (tmp_path / "empty/annotations/instances_default.json").is_file()
    export_dataset("voc", tmp_path / "new/voc", root=project)
    assert (tmp_path / "new/voc").stat().st_mode & 0o777 == (tmp_path / "new").stat().st_mode & 0o777
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["voc"]  # no temporary left


# --------------------------------------------------------------------------- real photo folders


def test_exif_rotated_jpeg_is_kept_byte_for_byte_and_read_in_the_displayed_frame(project: Path, tmp_path: Path):
    src = tmp_path / "src"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, displayed rotated a quarter turn: 20x40
    photo = picture(src / "images/IMG_0001.JPG", 40, 20, seed=14, exif=exif, quality=95)
    (src / "labels").mkdir()
    (src / "labels/IMG_0001.txt").write_text("0 0.5 0.75 1.0 0.5\n")  # the lower half of the displayed image
    (src / "labels/classes.txt").write_text("person\n")  # where LabelImg puts it: not a label file
    do_import("yolo", src, project)

    [image] = index(project)["images"]
    assert image == {"id": 1, "file_name": "IMG_0001.JPG", "width": 20, "height": 40}
    [ann] = index(project)["annotations"]
    assert ann["bbox"] == [0, 20, 20, 20]
    assert (project / "data/raw/IMG_0001.JPG").read_bytes() == photo.read_bytes()  # raw data as delivered
    upright = load_image_rgb(project / "data/raw/IMG_0001.JPG")  # the one reader applies the orientation
    assert upright.size == (20, 40)
    assert np.array_equal(np.asarray(upright), np.asarray(ImageOps.exif_transpose(load(photo)).convert("RGB")))
    manifest = build_manifest(project / "data/raw", project / "data/labels/annotations.json", task=tasks.get("detection"))
    assert (manifest["files"][0]["width"], manifest["files"][0]["height"]) == (20, 40)

    export_dataset("yolo", tmp_path / "out", root=project)
    assert (tmp_path / "out/images/IMG_0001.JPG").read_bytes() == photo.read_bytes()  # the original name back
    assert yolo_lines(tmp_path / "out/labels/IMG_0001.txt") == [(0, [0.5, 0.75, 1.0, 0.5])]


def test_coco_width_height_must_match_the_displayed_frame(project: Path, tmp_path: Path):
    src = tmp_path / "src"
    exif = Image.Exif()
    exif[0x0112] = 8
    picture(src / "images/p.jpeg", 30, 10, seed=15, exif=exif)
    coco = {"images": [{"id": 1, "file_name": "p.jpeg", "width": 30, "height": 10}],
            "categories": [{"id": 1, "name": "x"}], "annotations": []}
    (src / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(CvreproError, match=r"images\[0\] \(image id 1\): 'width' is 30 but .*p.jpeg is displayed 10x30"):
        do_import("coco", src, project)
    coco["images"][0].update(width=10, height=30)
    (src / "annotations.json").write_text(json.dumps(coco))
    do_import("coco", src, project)
    assert index(project)["images"][0]["file_name"] == "p.jpeg"


def test_grayscale_rgba_and_upper_case_extensions_are_kept_as_they_are(project: Path, tmp_path: Path):
    src = tmp_path / "src"
    files = [picture(src / "gray/g.JPG", 12, 10, mode="L", seed=16),
             picture(src / "rgba/r.PNG", 11, 9, mode="RGBA", seed=17),
             picture(src / "rgba/q.JPEG", 8, 6, seed=18)]
    do_import("imagefolder", src, project)
    imported = {im["file_name"]: (im["width"], im["height"]) for im in index(project)["images"]}
    assert imported == {"gray/g.JPG": (12, 10), "rgba/q.JPEG": (8, 6), "rgba/r.PNG": (11, 9)}
    for f in files:
        kept = project / "data/raw" / f.relative_to(src)
        assert kept.read_bytes() == f.read_bytes()  # the pipeline converts to RGB when it reads
        assert load_image_rgb(kept).mode == "RGB"
    assert load(project / "data/raw/gray/g.JPG").mode == "L"
    assert load(project / "data/raw/rgba/r.PNG").mode == "RGBA"


# --------------------------------------------------------------------------- real git + dvc


@pytest.mark.slow
def test_import_runs_dvc_add_and_export_rev_reads_a_tagged_version(project: Path, tmp_path: Path):
    src = tmp_path / "src"
    coco = coco_source(src)
    res = run(["cvrepro", "import", "coco", str(src)], project)
    assert json.loads(res.stdout)["images"] == 2
    assert (project / "data/raw.dvc").is_file() and (project / "data/labels.dvc").is_file()
    # the pipeline has not run in this fresh project; the two tracked folders are clean
    status = run(["dvc", "status", "data/raw.dvc", "data/labels.dvc"], project).stdout
    assert "Data and pipelines are up to date" in status, status
    assert {"/raw", "/labels"} <= set((project / "data/.gitignore").read_text().split())
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "dataset 0.1.0"], project)
    run(["git", "tag", "-a", "DS-0.1.0", "-m", "first labels"], project)
    tagged_labels = (project / "data/labels/annotations.json").read_bytes()

    # fix a label and add an image: the workspace moves on, the tag keeps the old version
    coco["annotations"][0]["bbox"] = [1, 1, 20, 20]
    picture(src / "images/c.png", 16, 16, seed=19)
    coco["images"].append({"id": 10, "file_name": "c.png", "width": 16, "height": 16})
    (src / "annotations.json").write_text(json.dumps(coco))
    run(["cvrepro", "import", "coco", str(src), "--force"], project)
    run(["git", "commit", "-qam", "label fix"], project)

    res = run(["cvrepro", "export", "--format", "coco", str(tmp_path / "old"), "--rev", "DS-0.1.0"], project)
    assert json.loads(res.stdout)["images"] == 2
    old = json.loads((tmp_path / "old/annotations/instances_default.json").read_text())  # the Datumaro layout
    assert old == {k: v for k, v in json.loads(tagged_labels).items() if k != "info"}  # info: the import record
    assert old["annotations"][0]["bbox"] == [0, 0, 40, 30]
    assert sorted(tree(tmp_path / "old/images/default")) == ["a.png", "night/b.png"]
    run(["cvrepro", "export", "--format", "yolo", str(tmp_path / "new")], project)
    assert sorted(tree(tmp_path / "new/images")) == ["a.png", "c.png", "night/b.png"]

    res = run(["cvrepro", "export", "--format", "coco", str(tmp_path / "x"), "--rev", "DS-9.9.9"], project,
              check=False)
    assert res.returncode == 2 and "error: " in res.stderr and "DS-9.9.9" in res.stderr
    res = run(["cvrepro", "import", "yolo", str(src)], project, check=False)
    assert res.returncode == 2 and "already holds data" in res.stderr


def test_demo_dataset_exports_to_every_detection_format_and_imports_back(project: Path, tmp_path: Path):
    from cvrepro.dataset.demo import generate_demo

    generate_demo(project, seed=2, n_images=6)
    demo = index(project)
    boxes = {a["id"]: a["bbox"] for a in demo["annotations"]}
    for fmt in ("coco", "yolo", "voc"):
        export_dataset(fmt, tmp_path / fmt, root=project)
        other = copy_template(tmp_path / f"project-{fmt}")
        do_import(fmt, tmp_path / fmt, other)
        back = index(other)
        assert [c["name"] for c in back["categories"]] == ["person", "cart", "shelf"]
        assert [im["file_name"] for im in back["images"]] == [im["file_name"] for im in demo["images"]]
        got = [a["bbox"] for a in back["annotations"]]
        assert np.allclose(got, [boxes[a["id"]] for a in demo["annotations"]], atol=1e-6, rtol=0), fmt


def test_cli_help_and_a_bad_source_exits_2_naming_the_file(project: Path, tmp_path: Path):
    for command in ("import", "export"):
        assert "--help" not in run(["cvrepro", command, "--help"], project).stderr
    yolo_source(tmp_path / "src")
    break_yolo_fields(tmp_path / "src")
    res = run(["cvrepro", "import", "yolo", str(tmp_path / "src")], project, check=False)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "labels/val/b.txt, line 2" in res.stderr
    assert not (project / "data/raw").exists() and not (project / "data/labels").exists()


# --------------------------------------------------------------------------- layouts, --invalid, conf option


def test_coco_in_the_cvat_datumaro_layout_keeps_subsets_and_renumbers_clashing_ids(project: Path, tmp_path: Path):
    """CVAT's "COCO 1.0" / Datumaro `coco_instances` export: annotations/instances_<subset>.json, images/<subset>/,
    ids numbered from 1 in each subset (Datumaro 1.x documented layout)."""
    src = tmp_path / "cvat"
    for subset, seed in (("train", 30), ("val", 31)):
        picture(src / f"images/{subset}/frame_000.jpg", 20, 10, seed=seed)
        coco = {"licenses": [], "info": {"version": ""},
                "categories": [{"id": 1, "name": "zebra", "supercategory": ""}, {"id": 2, "name": "apple",
                                                                                  "supercategory": ""}],
                "images": [{"id": 1, "file_name": "frame_000.jpg", "width": 20, "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0.0, 0.0, 20.0, 10.0],
                                 "area": 200.0, "iscrowd": 0, "segmentation": []}]}
        (src / "annotations").mkdir(parents=True, exist_ok=True)
        (src / f"annotations/instances_{subset}.json").write_text(json.dumps(coco))
    do_import("coco", src, project)  # found without --annotations
    imported = index(project)
    assert [(im["id"], im["file_name"], im["subset"]) for im in imported["images"]] == \
           [(1, "train/frame_000.jpg", "train"), (2, "val/frame_000.jpg", "val")]
    assert [(a["id"], a["image_id"]) for a in imported["annotations"]] == [(1, 1), (2, 2)]
    assert [c["name"] for c in imported["categories"]] == ["zebra", "apple"]
    export_dataset("coco", tmp_path / "out", root=project)
    assert sorted(tree(tmp_path / "out")) == ["annotations/instances_train.json", "annotations/instances_val.json",
                                              "images/train/frame_000.jpg", "images/val/frame_000.jpg"]
    do_import("coco", tmp_path / "out", project, force=True)
    assert index(project) == imported


def test_yolo_in_the_ultralytics_roboflow_layout_keeps_subsets(project: Path, tmp_path: Path):
    """data.yaml naming `train/images` and `valid/images` (Ultralytics 8.x docs, Roboflow's YOLOv8 export)."""
    src = tmp_path / "rf"
    picture(src / "train/images/a.jpg", 40, 20, seed=32)
    picture(src / "valid/images/b.jpg", 40, 20, seed=33)
    (src / "train/labels").mkdir(parents=True)
    (src / "valid/labels").mkdir(parents=True)
    (src / "train/labels/a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (src / "valid/labels/b.txt").write_text("0 0.25 0.5 0.5 1\n")
    (src / "data.yaml").write_text("train: train/images\nval: valid/images\nnc: 2\nnames: ['zebra', 'apple']\n")
    do_import("yolo", src, project)
    imported = index(project)
    assert [(im["file_name"], im["subset"]) for im in imported["images"]] == \
           [("train/images/a.jpg", "train"), ("valid/images/b.jpg", "val")]
    assert [(a["category_id"], a["bbox"]) for a in imported["annotations"]] == [(2, [10, 5, 20, 10]), (1, [0, 0, 20, 20])]


def test_invalid_drop_and_clip_report_every_box_and_the_manifest_counts_them(project: Path, tmp_path: Path):
    src = tmp_path / "src"
    coco = coco_source(src)
    good = [dict(a) for a in coco["annotations"]]
    coco["annotations"] += [
        {"id": 21, "image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 4]},  # zero width
        {"id": 22, "image_id": 7, "category_id": 1, "bbox": [30, 20, 20, 20]},  # reaches outside 40x30
        {"id": 23, "image_id": 9, "category_id": 5, "bbox": [40, 40, 3, 3]},  # wholly outside 32x32
    ]
    (src / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(CvreproError, match=r"annotation id 21: box .* is zero or negative size \(--invalid drop"):
        do_import("coco", src, project)
    assert not (project / "data/labels").exists()

    summary = do_import("coco", src, project, invalid="drop")
    assert summary["invalid"] == {"mode": "drop", "dropped": 3, "clipped": 0}
    rows = (project / "data/labels/import_report.csv").read_text().splitlines()
    assert rows[0] == "file,id,problem,action,before,after" and len(rows) == 4
    assert [r.split(",")[1] for r in rows[1:]] == ["annotation id 21", "annotation id 22", "annotation id 23"]
    kept = index(project)["annotations"]
    assert [a["id"] for a in kept] == [11, 12, 13]
    assert [{k: v for k, v in a.items() if k != "category_id"} for a in kept] == \
           [{k: v for k, v in a.items() if k != "category_id"} for a in good]  # the rest exactly as delivered
    manifest = build_manifest(project / "data/raw", project / "data/labels/annotations.json", task=tasks.get("detection"))
    assert manifest["stats"]["invalid_boxes"] == {"mode": "drop", "dropped": 3, "clipped": 0}

    summary = do_import("coco", src, project, invalid="clip", force=True)
    assert summary["invalid"] == {"mode": "clip", "dropped": 2, "clipped": 1}  # nothing left of 21 and 23
    clipped = next(a for a in index(project)["annotations"] if a["id"] == 22)
    assert clipped["bbox"] == [30, 20, 10, 10] and clipped["area"] == 100
    assert "annotation id 22,outside the 40x30 image,clipped,\"[30, 20, 20, 20]\",\"[30, 20, 10, 10]\"" in \
           (project / "data/labels/import_report.csv").read_text()


def test_import_writes_a_dataset_option_and_selects_it_with_its_task(project: Path, tmp_path: Path):
    import yaml as _yaml

    from cvrepro.config.params import load_params

    imagefolder_source(tmp_path / "My Photos")
    summary = do_import("imagefolder", tmp_path / "My Photos", project)
    assert summary["config"] == {"dataset_option": "conf/dataset/my_photos.yaml", "task": "classification"}
    option = _yaml.safe_load((project / "conf/dataset/my_photos.yaml").read_text())
    assert option["task"] == "classification" and option["classes"] == ["cat", "dog"]
    config = (project / "conf/config.yaml").read_text()
    assert "  - dataset: my_photos\n" in config and "  - task: classification  #" in config
    params = load_params(project / "params.yaml")
    assert params["task"] == "classification" and params["dataset"]["name"] == "my_photos"
    assert params["model"]["name"] == "cnn_small"  # the task option's defaults came with it
    (project / "conf/dataset/mine.yaml").write_text("name: mine\n")  # hand-written: never overwritten
    with pytest.raises(CvreproError, match="conf/dataset/mine.yaml: exists and was not written by `cvrepro import`"):
        do_import("imagefolder", tmp_path / "My Photos", project, force=True, name="mine")


def test_every_registered_plugin_satisfies_the_format_protocol():
    from cvrepro import tasks
    from cvrepro.formats.plugin import FormatPlugin, problems
    from cvrepro.formats.registry import PLUGINS, plugin

    for name in PLUGINS:
        module = plugin(name)
        assert isinstance(module, FormatPlugin), name
        assert problems(module) == [], name
        assert module.NAME == name and module.TASK in tasks.names()
    broken = type(plugin("coco"))("broken")  # a module with nothing in it
    assert not isinstance(broken, FormatPlugin) and "no detect()" in problems(broken)
