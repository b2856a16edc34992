"""`cvrepro export --splits`: every format writes the project's splits (data/splits/splits.json, made by the real
snapshot and split stages here) or the source's subsets in the layout its tools read (Ultralytics' data.yaml,
CVAT/Datumaro's instances_<subset>.json, VOC's ImageSets/Main, split folders for masks and ImageFolder);
`--splits none` keeps the flat layout; an export imported again keeps its subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import copy_template, run
from cvrepro.cli.data import SPLIT_MODES
from cvrepro.config.params import load_params
from cvrepro.core.fileio import CvreproError
from cvrepro.formats import registry
from cvrepro.formats.splits import MODES, NAMED, STANDARD
from cvrepro.formats.transfer import export_dataset, import_dataset
from cvrepro.stages import snapshot, split

N = 16  # images per built project: with the template's seed 42 and ratios 0.7/0.2/0.1 every split is filled


def picture(path: Path, width: int = 16, height: int = 12, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def index(root: Path) -> dict:
    return json.loads((root / "data/labels/annotations.json").read_text())


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def coco_source(src: Path, subsets: dict[str, str] | None = None) -> None:
    """N images img00.png ..., one box each, in two classes; `subsets`: image name -> CVAT subset."""
    images, anns = [], []
    for i in range(N):
        name = f"img{i:02d}.png"
        picture(src / "images" / name, seed=i)
        images.append({"id": i + 1, "file_name": name, "width": 16, "height": 12,
                       **({"subset": subsets[name]} if subsets and name in subsets else {})})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [1, 2, 5, 4], "area": 20,
                     "iscrowd": 0})
    src.mkdir(parents=True, exist_ok=True)
    (src / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))


def masks_source(src: Path) -> None:
    for i in range(N):
        picture(src / f"images/s{i:02d}.png", seed=i)
        mask = np.zeros((12, 16), np.uint8)
        mask[2:6, 3:9] = 1 + i % 2
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(src / f"masks/s{i:02d}.png")
    (src / "classes.txt").write_text("background\nroad\ncar\n")


def imagefolder_source(src: Path) -> None:
    for i in range(N):
        picture(src / ("cat" if i % 2 else "dog") / f"p{i:02d}.png", seed=i)


def built(project: Path, fmt: str, source) -> dict:
    """Import a source, run the real snapshot and split stages: the project's splits.json."""
    src = project.parent / f"{project.name}-src"
    source(src)
    import_dataset(fmt, src, root=project, dvc_add=False)
    params = load_params(project / "params.yaml")
    snapshot.run(params, project)
    return split.run(params, project)["splits"]


def split_of_name(members: dict[str, list[str]]) -> dict[str, str]:
    return {path: name for name, paths in members.items() for path in paths}


def subsets(root: Path) -> dict[str, str | None]:
    """image name without folders -> its subset attribute."""
    return {im["file_name"].rsplit("/", 1)[-1]: im.get("subset") for im in index(root)["images"]}


@pytest.fixture
def detection(project: Path) -> tuple[Path, dict]:
    return project, built(project, "coco", coco_source)


# --------------------------------------------------------------------------- the project's splits


def test_yolo_export_is_the_ultralytics_layout_of_the_project_splits(detection, tmp_path: Path):
    project, members = detection
    assert all(members[s] for s in ("train", "val", "test"))
    out = tmp_path / "yolo"
    summary = export_dataset("yolo", out, root=project)  # auto: splits.json exists
    assert summary["splits"] == {"from": "project", "counts": {s: len(members[s]) for s in ("train", "val", "test")}}
    for name in ("train", "val", "test"):
        assert files(out / "images" / name) == members[name]
        assert files(out / "labels" / name) == [p.replace(".png", ".txt") for p in members[name]]
    text = (out / "data.yaml").read_text()
    assert list(yaml.safe_load(text)) == ["path", "train", "val", "test", "names"]  # Ultralytics' own order
    assert yaml.safe_load(text) == {"path": str(out.resolve()), "train": "images/train", "val": "images/val",
                                    "test": "images/test", "names": {0: "cat", 1: "dog"}}
    assert (out / "labels/train" / members["train"][0].replace(".png", ".txt")).read_text().startswith(
        str(int(members["train"][0][3:5]) % 2) + " ")  # category id 1 + i % 2 -> YOLO class i % 2

    other = copy_template(tmp_path / "again")
    import_dataset("yolo", out, root=other, dvc_add=False)  # the data.yaml folders give the subsets back
    assert subsets(other) == {p: s for p, s in split_of_name(members).items()}


def test_coco_export_writes_one_instances_file_per_split_and_imports_back(detection, tmp_path: Path):
    project, members = detection
    out = tmp_path / "coco"
    export_dataset("coco", out, root=project, splits="project")
    assert files(out / "annotations") == ["instances_test.json", "instances_train.json", "instances_val.json"]
    for name in ("train", "val", "test"):
        coco = json.loads((out / f"annotations/instances_{name}.json").read_text())
        assert sorted(im["file_name"] for im in coco["images"]) == members[name] == files(out / "images" / name)
        ids = {im["id"] for im in coco["images"]}
        assert {a["image_id"] for a in coco["annotations"]} == ids  # each file holds its own images' boxes
    other = copy_template(tmp_path / "again")
    import_dataset("coco", out, root=other, dvc_add=False)
    assert subsets(other) == split_of_name(members)


def test_voc_export_writes_an_image_set_per_split(detection, tmp_path: Path):
    project, members = detection
    out = tmp_path / "voc"
    export_dataset("voc", out, root=project)
    assert files(out / "ImageSets/Main") == ["test.txt", "train.txt", "val.txt"]
    for name in ("train", "val", "test"):
        assert (out / f"ImageSets/Main/{name}.txt").read_text().split() == [p[:-4] for p in members[name]]
    assert files(out / "JPEGImages") == sorted(p for ps in members.values() for p in ps)  # VOC has no split folders
    other = copy_template(tmp_path / "again")
    import_dataset("voc", out, root=other, dvc_add=False)
    assert subsets(other) == split_of_name(members)


def test_masks_and_imagefolder_write_split_folders_and_import_back(tmp_path: Path):
    seg = copy_template(tmp_path / "seg")
    members = built(seg, "masks", masks_source)
    out = tmp_path / "masks"
    assert export_dataset("masks", out, root=seg)["splits"]["from"] == "project"
    for name in ("train", "val", "test"):
        assert files(out / "images" / name) == files(out / "masks" / name) == members[name]
    other = copy_template(tmp_path / "seg-again")
    import_dataset("masks", out, root=other, dvc_add=False)
    assert subsets(other) == split_of_name(members)

    cls = copy_template(tmp_path / "cls")
    members = built(cls, "imagefolder", imagefolder_source)
    out = tmp_path / "folders"
    export_dataset("imagefolder", out, root=cls)
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]  # torchvision / Ultralytics classify
    for name in ("train", "val", "test"):
        assert files(out / name) == members[name]  # <split>/<class>/<image>: dog/p00.png under train/
    other = copy_template(tmp_path / "cls-again")
    import_dataset("imagefolder", out, root=other, dvc_add=False)
    assert [c["name"] for c in index(other)["categories"]] == ["cat", "dog"]  # the split folders are not classes
    assert {im["file_name"].split("/", 1)[1]: im["subset"] for im in index(other)["images"]} == split_of_name(members)
    again = tmp_path / "folders-again"
    export_dataset("imagefolder", again, root=other)  # auto: the subsets just imported, same tree
    assert files(again) == files(out)


# --------------------------------------------------------------------------- --splits none, subsets, auto


def test_splits_none_keeps_the_flat_layout(detection, tmp_path: Path):
    project, members = detection
    names = sorted(p for ps in members.values() for p in ps)
    export_dataset("yolo", tmp_path / "yolo", root=project, splits="none")
    assert files(tmp_path / "yolo/images") == names
    assert yaml.safe_load((tmp_path / "yolo/data.yaml").read_text()) == {"nc": 2, "names": ["cat", "dog"]}
    summary = export_dataset("coco", tmp_path / "coco", root=project, splits="none")
    assert summary["splits"] == {"from": "none", "counts": {}}
    assert files(tmp_path / "coco/annotations") == ["instances_default.json"]
    assert files(tmp_path / "coco/images/default") == names
    export_dataset("voc", tmp_path / "voc", root=project, splits="none")
    assert files(tmp_path / "voc/ImageSets/Main") == ["default.txt"]
    other = copy_template(tmp_path / "again")
    import_dataset("voc", tmp_path / "voc", root=other, dvc_add=False)  # Datumaro's default: no subset
    assert set(subsets(other).values()) == {None}


def test_source_subsets_round_trip_through_every_detection_format(project: Path, tmp_path: Path):
    """No splits.json: auto takes the subsets the import recorded (CVAT's `valid` is Ultralytics' `val`)."""
    given = {f"img{i:02d}.png": ("train", "valid", "test")[i % 3] for i in range(N)}
    coco_source(tmp_path / "src", given)
    import_dataset("coco", tmp_path / "src", root=project, dvc_add=False)
    out = tmp_path / "yolo"
    assert export_dataset("yolo", out, root=project)["splits"]["from"] == "subsets"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    other = copy_template(tmp_path / "from-yolo")
    import_dataset("yolo", out, root=other, dvc_add=False)
    assert subsets(other) == {n: {"valid": "val"}.get(s, s) for n, s in given.items()}
    for fmt in ("coco", "voc"):  # any subset name: kept as it is
        export_dataset(fmt, tmp_path / fmt, root=project)
        other = copy_template(tmp_path / f"from-{fmt}")
        import_dataset(fmt, tmp_path / fmt, root=other, dvc_add=False)
        assert subsets(other) == given, fmt


def ultralytics_label(image: Path) -> Path:
    """Where Ultralytics 8.x looks for an image's labels (data/utils.py img2label_paths): the last /images/ of
    the path becomes /labels/, the extension .txt."""
    head, tail = str(image).rsplit("/images/", 1)
    return Path(f"{head}/labels/{tail.rsplit('.', 1)[0]}.txt")


def test_a_roboflow_source_exports_where_ultralytics_finds_the_labels(project: Path, tmp_path: Path):
    src = tmp_path / "rf"
    for folder, seed in (("train", 1), ("valid", 2)):
        picture(src / f"{folder}/images/a.jpg", seed=seed)
        (src / f"{folder}/labels").mkdir(parents=True)
        (src / f"{folder}/labels/a.txt").write_text(f"{seed - 1} 0.5 0.5 0.5 0.5\n")
    (src / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: ['zebra', 'apple']\n")
    import_dataset("yolo", src, root=project, dvc_add=False)
    assert [im["file_name"] for im in index(project)["images"]] == ["train/images/a.jpg", "valid/images/a.jpg"]
    out = tmp_path / "out"
    export_dataset("yolo", out, root=project)
    assert files(out / "images") == ["train/a.jpg", "val/a.jpg"]  # no images/ folder inside a split
    for name, cls in (("train", "0"), ("val", "1")):
        assert ultralytics_label(out / f"images/{name}/a.jpg").read_text().split()[0] == cls


def test_auto_prefers_the_project_splits_and_a_stale_or_unplaceable_split_is_refused(project: Path, tmp_path: Path):
    coco_source(tmp_path / "src", {"img00.png": "extra"})
    import_dataset("coco", tmp_path / "src", root=project, dvc_add=False)
    with pytest.raises(CvreproError, match=r"export --format yolo: .*img00.png.*subset 'extra' has no place in the "
                                           r"yolo layout \(train, val, test\)"):
        export_dataset("yolo", tmp_path / "yolo", root=project)
    assert not (tmp_path / "yolo").exists()
    coco = export_dataset("coco", tmp_path / "coco", root=project)  # any name: extra, and default for the rest
    assert coco["splits"] == {"from": "subsets", "counts": {"extra": 1}, "unsplit": N - 1}
    with pytest.raises(CvreproError, match="--splits project: data/splits/splits.json not found; run `dvc repro"):
        export_dataset("coco", tmp_path / "p", root=project, splits="project")
    with pytest.raises(CvreproError, match="masks: .*img00.png.*has no subset, but others have|not segmentation"):
        export_dataset("masks", tmp_path / "m", root=project)

    params = load_params(project / "params.yaml")
    snapshot.run(params, project)
    members = split.run(params, project)["splits"]
    assert export_dataset("yolo", tmp_path / "yolo", root=project)["splits"]["from"] == "project"  # before subsets
    record = json.loads((project / "data/splits/splits.json").read_text())
    record["splits"]["train"].remove(members["train"][0])  # labels changed since the split ran
    (project / "data/splits/splits.json").write_text(json.dumps(record))
    with pytest.raises(CvreproError, match=rf"data/splits/splits.json: image {members['train'][0]} of "
                                           r"data/labels/annotations.json is in no split: the file is stale"):
        export_dataset("voc", tmp_path / "voc", root=project)
    assert not (tmp_path / "voc").exists()
    assert export_dataset("voc", tmp_path / "voc", root=project, splits="subsets")["splits"]["from"] == "subsets"


def test_every_plugin_declares_its_splits_and_the_cli_offers_the_modes(project: Path, tmp_path: Path):
    assert {n: registry.plugin(n).WRITES_SPLITS for n in registry.format_names()} == {
        "coco": NAMED, "voc": NAMED, "yolo": STANDARD, "masks": STANDARD, "imagefolder": STANDARD}
    assert SPLIT_MODES == MODES
    coco_source(tmp_path / "src", {f"img{i:02d}.png": "train" for i in range(N)})
    import_dataset("coco", tmp_path / "src", root=project, dvc_add=False)
    res = run(["cvrepro", "export", "--format", "yolo", str(tmp_path / "out"), "--splits", "subsets"], project)
    assert json.loads(res.stdout)["splits"] == {"from": "subsets", "counts": {"train": N}}
    res = run(["cvrepro", "export", "--format", "yolo", str(tmp_path / "x"), "--splits", "project"], project,
              check=False)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "splits.json not found" in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_export_rev_reads_the_splits_the_revision_recorded(project: Path, tmp_path: Path):
    """Real git + dvc: a tag after `dvc repro split` exports its splits with no checkout and no splits.json in the
    workspace; a commit before the split stage ran (dvc.yaml declares the output, no dvc.lock records it) has none."""
    coco_source(tmp_path / "src")
    run(["cvrepro", "import", "coco", str(tmp_path / "src")], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "data"], project)
    run(["dvc", "repro", "split"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "split"], project)
    run(["git", "tag", "-a", "DS-0.1.0", "-m", "first"], project)
    members = json.loads((project / "data/splits/splits.json").read_text())["splits"]
    (project / "data/splits/splits.json").unlink()

    res = run(["cvrepro", "export", "--format", "coco", str(tmp_path / "tagged"), "--rev", "DS-0.1.0"], project)
    assert json.loads(res.stdout)["splits"]["from"] == "project"
    for name in ("train", "val", "test"):
        assert files(tmp_path / "tagged/images" / name) == members[name]
    res = run(["cvrepro", "export", "--format", "coco", str(tmp_path / "before"), "--rev", "HEAD~1"], project)
    assert json.loads(res.stdout)["splits"] == {"from": "none", "counts": {}}
