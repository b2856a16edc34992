"""`cvrepro import SRC`: the format and layout are detected (each format from a source its own writer made,
LabelImg in both layouts, pairing by <filename> then stem), an ambiguous or unknown folder is one line, and the
bad-file policy (--bad-files, --unlabelled) lists every problem or imports the rest and reports each, with
paths relative to SRC."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run
from cvrepro import tasks
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.manifest import build_manifest
from cvrepro.formats.common import Dataset
from cvrepro.formats.registry import choose, plugin
from cvrepro.formats.transfer import import_dataset


def picture(path: Path, width: int, height: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def detection(tmp: Path) -> Dataset:
    """Three images: two with boxes, one without."""
    sizes = {"a.jpg": (40, 30), "b.jpg": (24, 20), "c.png": (16, 16)}
    files = {name: picture(tmp / "pixels" / name, w, h, seed) for seed, (name, (w, h)) in enumerate(sizes.items())}
    images = [{"id": i, "file_name": name, "width": w, "height": h}
              for i, (name, (w, h)) in enumerate(sizes.items(), start=1)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12], "area": 120, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 5, 15, 20], "area": 300, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 24, 20], "area": 480, "iscrowd": 0}]
    return Dataset("detection", [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], images, anns,
                   {im["id"]: str(files[im["file_name"]]) for im in images})


def segmentation(tmp: Path) -> Dataset:
    picture(tmp / "pixels/s.png", 6, 5, 7)
    Image.fromarray(np.ones((5, 6), np.uint8)).save(tmp / "pixels/s_mask.png")
    return Dataset("segmentation", [{"id": 1, "name": "road"}],
                   [{"id": 1, "file_name": "s.png", "width": 6, "height": 5, "mask_file": "masks/s.png"}], [],
                   {1: str(tmp / "pixels/s.png")}, {1: str(tmp / "pixels/s_mask.png")})


def classification(tmp: Path) -> Dataset:
    picture(tmp / "pixels/k.png", 8, 8, 8)
    picture(tmp / "pixels/l.png", 8, 8, 9)
    return Dataset("classification", [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
                   [{"id": 1, "file_name": "k.png", "width": 8, "height": 8},
                    {"id": 2, "file_name": "l.png", "width": 8, "height": 8}],
                   [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 2, "category_id": 2}],
                   {1: str(tmp / "pixels/k.png"), 2: str(tmp / "pixels/l.png")})


def written(fmt: str, tmp: Path, make=detection) -> Path:
    """A source in `fmt`, made by that format's own writer."""
    dest = tmp / fmt
    plugin(fmt).write(make(tmp), dest)
    return dest


def labelimg(tmp: Path, flat: bool = False) -> Path:
    """The voc writer's output as LabelImg leaves it: annotations/ beside images/, or the XML beside the images;
    c.png (no objects) without an XML."""
    devkit = written("voc", tmp)
    src = tmp / "labelimg"
    shutil.copytree(devkit / "JPEGImages", src if flat else src / "images")
    shutil.copytree(devkit / "Annotations", src if flat else src / "annotations", dirs_exist_ok=True)
    (src / ("c.xml" if flat else "annotations/c.xml")).unlink()  # LabelImg writes none for an image not labelled
    return src


def do_import(src: Path, root: Path, fmt: str | None = None, **kw) -> dict:
    return import_dataset(fmt, src, root=root, dvc_add=False, **kw)


def index(root: Path) -> dict:
    return json.loads((root / "data/labels/annotations.json").read_text())


def report(root: Path) -> list[dict]:
    with open(root / "data/labels/import_report.csv", newline="") as f:
        return list(csv.DictReader(f))


def boxes(root: Path) -> list[tuple]:
    idx = index(root)
    names = {im["id"]: im["file_name"].rsplit("/", 1)[-1] for im in idx["images"]}
    return sorted((names[a["image_id"]], a["category_id"], a["bbox"]) for a in idx["annotations"])


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("fmt, make, said", [
    ("coco", detection, "coco (CVAT/Datumaro: annotations/instances_{default}.json)"),
    ("yolo", detection, "yolo (YOLO: images/ + labels/)"),
    ("voc", detection, "voc (VOC devkit: JPEGImages/ + Annotations/)"),
    ("masks", segmentation, "masks (mask folders: images/ + masks/ + classes.txt)"),
    ("imagefolder", classification, "imagefolder (ImageFolder: 2 class folders)"),
])
def test_each_format_is_detected_from_what_its_writer_wrote(project: Path, tmp_path: Path, fmt, make, said):
    src = written(fmt, tmp_path, make)
    summary = do_import(src, project)
    assert summary["detected"] == said and summary["format"] == fmt and summary["task"] == make(tmp_path).task


def test_plain_coco_json_is_detected(tmp_path: Path):
    src = tmp_path / "plain"
    picture(src / "images/a.jpg", 4, 4, 0)
    (src / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert choose(src) == ("coco", "COCO: annotations.json")


@pytest.mark.parametrize("flat, said", [(False, "LabelImg: annotations/ beside images/"),
                                        (True, "LabelImg: XML beside the images")])
def test_labelimg_both_layouts_import_as_the_devkit_does(project: Path, tmp_path: Path, flat, said):
    do_import(written("voc", tmp_path), project)
    expected = boxes(project)
    src = labelimg(tmp_path, flat)
    summary = do_import(src, project, force=True)
    assert summary["detected"] == f"voc ({said})"
    assert boxes(project) == expected and summary["images"] == 3 and summary["annotations"] == 3
    do_import(src, project, fmt="voc", force=True)  # forcing the format reads the same layout
    assert boxes(project) == expected


def test_labelimg_pairs_by_filename_then_stem_and_ignores_path(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    ann = src / "annotations"
    a = (ann / "a.xml").read_text().replace("</filename>", "</filename><path>/Users/someone/x/c.png</path>")
    (ann / "a.xml").unlink()
    (ann / "renamed.xml").write_text(a)  # its <filename> a.jpg pairs it; the stem would not
    b = ann / "b.xml"
    b.write_text(b.read_text().replace("<filename>b.jpg</filename>", "<filename>gone.jpg</filename>"))  # stem
    do_import(src, project)
    assert [n for n, _, _ in boxes(project)] == ["a.jpg", "a.jpg", "b.jpg"]


def test_ambiguous_and_unknown_folders_say_what_was_looked_for_in_one_line(tmp_path: Path):
    both = written("yolo", tmp_path)
    (both / "annotations.json").write_text("{}")
    with pytest.raises(CvreproError) as err:
        choose(both)
    assert "ambiguous layout" in str(err.value) and "coco (COCO: annotations.json)" in str(err.value)
    assert "yolo (YOLO: images/ + labels/)" in str(err.value) and "\n" not in str(err.value)

    parent = tmp_path / "datasets"  # a folder holding one dataset: not an ImageFolder of one class
    shutil.copytree(labelimg(tmp_path), parent / "labelimg")
    with pytest.raises(CvreproError, match=r"no known dataset layout .*; labelimg/ inside it is voc \(LabelImg"):
        choose(parent)

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "README.md").write_text("hello")
    with pytest.raises(CvreproError) as err:
        choose(unknown)
    message = str(err.value)
    assert "no known dataset layout" in message and "\n" not in message
    for name in ("coco:", "yolo:", "voc:", "masks:", "imagefolder:", "XML beside images"):
        assert name in message


def test_cli_detects_and_prints_it_and_still_takes_a_format(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    res = run(["cvrepro", "import", str(src), "--no-dvc-add"], project)
    assert "detected: voc (LabelImg: annotations/ beside images/)" in res.stderr
    assert "--unlabelled negative: 1 images without annotations kept as negatives" in res.stderr
    assert json.loads(res.stdout)["images"] == 3
    res = run(["cvrepro", "import", "voc", str(src), "--no-dvc-add", "--force"], project)
    assert "detected" not in res.stderr and json.loads(res.stdout)["format"] == "voc"
    res = run(["cvrepro", "import", "nope", str(src), "--no-dvc-add", "--force"], project, check=False)
    assert res.returncode == 2 and "format 'nope' is unknown" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- bad files


def truncate(path: Path, n: int = 20) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def test_truncated_images_fail_listing_every_one_or_drop_importing_the_rest(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    truncate(src / "images/a.jpg")
    truncate(src / "images/b.jpg")
    res = run(["cvrepro", "import", str(src), "--no-dvc-add"], project, check=False)
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert lines[0] == "detected: voc (LabelImg: annotations/ beside images/)"
    assert "2 files cannot be imported; nothing was written" in lines[1]
    assert [line.split(":")[0] for line in lines[2:4]] == ["images/a.jpg", "images/b.jpg"]
    assert "truncated" in lines[2] and "truncated" in lines[3]
    assert not (project / "data/raw").exists() and not (project / "data/labels").exists()

    summary = do_import(src, project, bad_files="drop")
    assert summary["images"] == 1 and summary["bad_files"]["dropped"] == 2
    assert [im["file_name"] for im in index(project)["images"]] == ["c.png"]
    rows = report(project)
    assert [(r["file"], r["id"], r["action"]) for r in rows] == [("images/a.jpg", "bad file", "dropped"),
                                                                  ("images/b.jpg", "bad file", "dropped")]
    manifest = build_manifest(project / "data/raw", project / "data/labels/annotations.json", task=tasks.get("detection"))
    assert manifest["stats"]["bad_files"]["dropped"] == 2
    from cvrepro.provenance.release import dataset_notes

    notes = dataset_notes({"version": "DS-0.1.0", "task": "detection", "stats": manifest["stats"], "notes": "",
                           "class_map": manifest["class_map"], "snapshot_id": manifest["snapshot_id"],
                           "source_commit": "abc", "bump": "minor", "split": {}})
    assert "- import `--bad-files drop`: 2 files dropped" in notes  # the release notes say what was left out


def test_orphan_and_second_annotation_files_are_bad_files(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    shutil.copy(src / "annotations/b.xml", src / "annotations/zz_orphan.xml")
    xml = (src / "annotations/b.xml").read_text()
    (src / "annotations/zz_orphan.xml").write_text(xml.replace("b.jpg", "nothing.jpg"))
    (src / "annotations/b_copy.xml").write_text(xml)  # its <filename> names b.jpg, which b.xml already took
    with pytest.raises(CvreproError) as err:
        do_import(src, project)
    lines = str(err.value).splitlines()[1:]
    assert lines[0].startswith("annotations/b_copy.xml: a second annotation file for images/b.jpg")
    assert lines[1].startswith("annotations/zz_orphan.xml: annotation without an image")
    summary = do_import(src, project, bad_files="drop")
    assert summary["images"] == 3 and summary["annotations"] == 3 and summary["bad_files"]["dropped"] == 2
    assert [r["file"] for r in report(project)] == ["annotations/b_copy.xml", "annotations/zz_orphan.xml"]

    shutil.copy(src / "images/c.png", src / "images/c.jpg")  # one stem, two images: whose labels?
    with pytest.raises(CvreproError, match="images/c.png: same name as images/c.jpg but for the extension"):
        do_import(src, project, force=True)


@pytest.mark.parametrize("fmt", ["labelimg", "yolo"])
def test_malformed_annotation_files_are_listed_or_dropped_with_their_image(project: Path, tmp_path: Path, fmt):
    # one truncated XML among many is the first hour with LabelImg data; a bad line in a YOLO label file alike
    if fmt == "labelimg":
        src, folder, ext = labelimg(tmp_path), "annotations", "xml"
        truncate(src / "annotations/a.xml", 60)  # cut inside the XML
        xml = (src / "annotations/b.xml").read_text()
        (src / "annotations/b.xml").write_text(xml.replace("<xmin>", "<xmin>x", 1))
        problems = ["invalid XML at line", "<bndbox><xmin>: expected a number, got 'x"]
    else:
        src, folder, ext = written("yolo", tmp_path), "labels", "txt"
        (src / "labels/a.txt").write_text((src / "labels/a.txt").read_text() + "0 0.5 0.5\n")
        (src / "labels/b.txt").write_bytes(b"\xff\xfe garbage")
        problems = ["line 3: expected 5 values 'class cx cy w h', got 3", "not text (byte 0)"]
    with pytest.raises(CvreproError) as err:
        do_import(src, project)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("2 files cannot be imported; nothing was written (--bad-files drop imports the rest)")
    assert [line.split(":")[0].split(",")[0] for line in lines[1:]] == [f"{folder}/a.{ext}", f"{folder}/b.{ext}"]
    assert all(p in line for p, line in zip(problems, lines[1:])), lines
    assert not (project / "data/raw").exists()  # nothing written

    summary = do_import(src, project, bad_files="drop")
    assert summary["images"] == 1 and summary["annotations"] == 0 and summary["bad_files"]["dropped"] == 2
    assert [im["file_name"] for im in index(project)["images"]] == ["c.png"]  # not a, b as false negatives
    assert sorted(p.name for p in (project / "data/raw").rglob("*") if p.is_file()) == ["c.png"]
    rows = report(project)
    assert [r["file"] for r in rows] == [f"{folder}/a.{ext}", f"{folder}/b.{ext}"]
    assert rows[0]["problem"].endswith("; its image images/a.jpg is left out with it")


def test_an_invalid_box_stays_invalids_business_not_a_bad_file(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    xml = (src / "annotations/b.xml").read_text()
    (src / "annotations/b.xml").write_text(xml.replace("<xmax>24</xmax>", "<xmax>90</xmax>", 1))
    with pytest.raises(CvreproError, match="outside"):  # --invalid fail, whatever --bad-files says
        do_import(src, project, bad_files="drop")


def test_duplicate_coco_entries_are_bad_files(project: Path, tmp_path: Path):
    src = written("coco", tmp_path)
    path = src / "annotations/instances_default.json"
    coco = json.loads(path.read_text())
    coco["images"].append({**coco["images"][0], "id": 99})
    path.write_text(json.dumps(coco))
    with pytest.raises(CvreproError, match="a second entry for this file"):
        do_import(src, project)
    summary = do_import(src, project, bad_files="drop")
    assert summary["images"] == 3 and report(project)[0]["file"] == "images/default/a.jpg"


def test_unlabelled_images_are_negatives_by_default_or_dropped_or_fail(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)  # c.png has no XML
    summary = do_import(src, project)
    assert summary["images"] == 3 and summary["bad_files"]["unlabelled"] == {"mode": "negative", "negatives": 1,
                                                                            "dropped": 0}
    assert not (project / "data/labels/import_report.csv").exists()
    summary = do_import(src, project, force=True, unlabelled="drop")
    assert summary["images"] == 2 and summary["bad_files"]["unlabelled"]["dropped"] == 1
    assert [(r["file"], r["id"]) for r in report(project)] == [("images/c.png", "unlabelled")]
    with pytest.raises(CvreproError, match=r"images/c.png: image without an XML \(--unlabelled drop"):
        do_import(src, project, force=True, unlabelled="fail")


def test_report_paths_are_relative_to_src_and_a_clean_import_keeps_its_snapshot_id(project: Path, tmp_path: Path):
    src = labelimg(tmp_path)
    clean = do_import(src, project)
    assert clean["bad_files"]["dropped"] == 0
    manifest = build_manifest(project / "data/raw", project / "data/labels/annotations.json", task=tasks.get("detection"))
    stripped = {k: v for k, v in index(project).items() if k != "info"}
    (tmp_path / "plain.json").write_text(json.dumps(stripped))
    assert build_manifest(project / "data/raw", tmp_path / "plain.json", task=tasks.get("detection"))["snapshot_id"] == \
        manifest["snapshot_id"]

    xml = src / "annotations/b.xml"
    xml.write_text(xml.read_text().replace("<xmax>24</xmax>", "<xmax>90</xmax>"))
    do_import(src, project, force=True, invalid="drop")
    assert [(r["file"], r["problem"]) for r in report(project)] == [("annotations/b.xml", "outside the 24x20 image")]


def test_a_hand_written_fingerprint_option_refuses_the_import_before_any_data_moves(project: Path, tmp_path: Path):
    """The defaults file is written after the data is in place: one the user wrote is refused up front."""
    src = labelimg(tmp_path)
    (project / "conf/fingerprint").mkdir(parents=True, exist_ok=True)
    (project / "conf/fingerprint" / f"{src.name}.yaml").write_text("preprocess:\n  size: 64\n")
    res = run(["cvrepro", "import", str(src), "--no-dvc-add"], project, check=False)
    assert res.returncode == 2 and "was not written by `cvrepro fingerprint`" in res.stderr, res.stderr
    assert not (project / "data/raw").exists() and not (project / f"conf/dataset/{src.name}.yaml").exists()
