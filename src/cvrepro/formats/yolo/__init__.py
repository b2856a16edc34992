"""YOLO detection, one `class cx cy w h` line per box (normalised by the displayed image size), in the layouts
people have:

- `SRC/images/**` + `SRC/labels/**.txt` (the label of `images/sub/a.jpg` is `labels/sub/a.txt`), names from
  `SRC/data.yaml` or `classes.txt`; data.yaml's `train:`/`val:`/`test:` folders under images/ give the subset;
- Ultralytics/Roboflow: `SRC/data.yaml` whose `train:`/`val:`/`test:` name image folders anywhere under SRC
  (`train/images`), labels where Ultralytics looks (the last `images` folder of the path becomes `labels`,
  else beside the image);
- darknet (CVAT "YOLO 1.1", Datumaro `yolo`): `SRC/obj.names` (and `obj.data`), images with their .txt label
  beside them in `SRC/obj_<subset>_data/`.

An empty label file means an image without objects; no label file, an unlabelled image (`--unlabelled`: kept
as a negative by default); a label file without an image is a bad file (`--bad-files`). YOLO class i becomes
category id i + 1; an image under a subset folder gets the attribute `subset` (train, val, test).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cvrepro.core.fileio import CvreproError, atomic_write_text
from cvrepro.formats.common import (
    BadAnnotation,
    BoxCheck,
    Dataset,
    FileCheck,
    by_stem,
    categories_from_names,
    contiguous_names,
    find_images,
    stem_key,
    tidy,
)
from cvrepro.formats.splits import STANDARD, Assignment, placed, split_names


NAME = "yolo"
TASK = "detection"
WRITES_SPLITS = STANDARD  # data.yaml names train/val/test folders only


SUBSETS = ("train", "val", "test")  # the data.yaml keys that name image folders


LOOKS_FOR = "images/ + labels/*.txt, data.yaml naming image folders (Ultralytics), or obj.names (darknet)"


def detect(src: Path) -> str | None:
    """A YOLO source, its layout described: SRC/images/ + SRC/labels/ with .txt files, a data.yaml naming image
    folders, or darknet's obj.names."""
    labels = src / "labels"
    if (src / "images").is_dir() and labels.is_dir() and any(labels.rglob("*.txt")):
        return "YOLO: images/ + labels/"
    if (src / "obj.names").is_file() or (src / "obj.data").is_file():
        return "darknet: obj.names + obj_<subset>_data/"
    try:
        ultralytics = (src / "data.yaml").is_file() and bool(_data_yaml(src).get("names")) and bool(_parts(src))
    except CvreproError:
        ultralytics = False  # not readable as data.yaml: not this layout (read says why when it is forced)
    return "Ultralytics: data.yaml" if ultralytics else None

CLASSES_IN_LABELS = "classes.txt"  # LabelImg writes the class list beside the label files: not a label file


def _data_yaml(src: Path) -> dict:
    path = src / "data.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CvreproError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise CvreproError(f"{path}: not a YAML mapping with 'names'")
    return data


def _yaml_folders(src: Path) -> dict[str, Path]:
    """subset -> image folder, from data.yaml's train/val/test (relative to its `path`, else to SRC)."""
    data = _data_yaml(src)
    base = src / data["path"] if isinstance(data.get("path"), str) and (src / data["path"]).is_dir() else src
    out = {}
    for subset in SUBSETS:
        value = data.get(subset)
        for v in value if isinstance(value, list) else [value] if value else []:
            folder = Path(v) if Path(v).is_absolute() else base / v
            if folder.suffix == ".txt":
                raise CvreproError(f"{src / 'data.yaml'}: '{subset}: {v}': image lists (.txt) are not supported; "
                                   "name the image folder")
            if folder.is_dir():
                out.setdefault(subset, folder.resolve())
    return out


def _parts(src: Path) -> list[tuple[Path, Path, str, str | None]]:
    """(image folder, label folder, name prefix under data/raw, subset) of each part of the source."""
    if (src / "images").is_dir():
        return [(src / "images", src / "labels", "", None)]
    darknet = sorted(p for p in src.glob("obj_*_data") if p.is_dir())
    if darknet:
        return [(p, p, p.name + "/", p.name[len("obj_"):-len("_data")]) for p in darknet]
    parts = []
    for subset, folder in _yaml_folders(src).items():
        parents = folder.parts
        cut = len(parents) - 1 - parents[::-1].index("images") if "images" in parents else None
        labels = Path(*parents[:cut], "labels", *parents[cut + 1:]) if cut is not None else folder
        prefix = folder.relative_to(src.resolve()).as_posix() + "/" if folder.is_relative_to(src.resolve()) \
            else f"{subset}/"
        parts.append((folder, labels, prefix, subset))
    return parts


def _class_names(src: Path) -> tuple[list, str]:
    """(names in class-index order, the file they came from)."""
    data_yaml = src / "data.yaml"
    if data_yaml.is_file():
        names = _data_yaml(src).get("names")
        if isinstance(names, dict):
            if set(names) != set(range(len(names))):
                raise CvreproError(f"{data_yaml}: 'names' keys must be the class indices 0..{len(names) - 1}")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            raise CvreproError(f"{data_yaml}: 'names' must be a non-empty list or a dict index -> name")
        return names, str(data_yaml)
    for classes_txt in (src / "obj.names", src / "classes.txt", src / "labels" / CLASSES_IN_LABELS):
        if classes_txt.is_file():
            return [line.strip() for line in classes_txt.read_text().splitlines() if line.strip()], str(classes_txt)
    raise CvreproError(f"{src}: no class names: expected data.yaml (with 'names'), obj.names or classes.txt")


def _boxes(path: Path, n_classes: int, width: int, height: int, check: BoxCheck) -> list[tuple[int, list]]:
    boxes = []
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise BadAnnotation(f"{path}: not text (byte {e.start}); a YOLO label file holds lines 'class cx cy w h'") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        if len(fields) != 5:
            raise BadAnnotation(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
        try:
            cls, (cx, cy, w, h) = int(fields[0]), (float(v) for v in fields[1:])
        except ValueError:
            raise BadAnnotation(f"{where}: not an integer class and 4 numbers: {line.strip()!r}") from None
        if not 0 <= cls < n_classes:
            raise BadAnnotation(f"{where}: class index {cls} out of range 0..{n_classes - 1}")
        bbox = check([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height], width, height,
                     str(path), f"line {lineno}")
        if bbox is not None:
            boxes.append((cls + 1, [tidy(v) for v in bbox]))
    return boxes


def _labels(label_dir: Path, stems: dict[str, str], image_dir: Path, files: FileCheck) -> dict[str, Path]:
    """stem key -> label file under label_dir; a label file with no image of its name is a bad file."""
    skip = label_dir / CLASSES_IN_LABELS
    found = {stem_key(p.relative_to(label_dir).as_posix()): p for p in sorted(label_dir.rglob("*"))
             if p.is_file() and p.suffix.lower() == ".txt" and p != skip} if label_dir.is_dir() else {}
    for key in sorted(set(found) - set(stems)):
        files.bad(found.pop(key), f"annotation without an image: no image of that name under {files.rel(image_dir)}")
    return found


def read(src: Path, check: BoxCheck | None = None, files: FileCheck | None = None, **_options) -> Dataset:
    src, check = Path(src), check or BoxCheck()
    files = files or FileCheck(src=src)
    parts = _parts(src)
    if not parts:
        raise CvreproError(f"{src}: no images/ folder, obj_<subset>_data/ folder or data.yaml train/val folder")
    names, names_file = _class_names(src)
    categories = categories_from_names(names, names_file)
    subset_dirs = {s: f for s, f in _yaml_folders(src).items()} if (src / "images").is_dir() else {}

    images, anns, sources = [], [], {}
    for image_dir, label_dir, prefix, subset in parts:
        found_images = find_images(image_dir)
        label_files = _labels(label_dir, by_stem(found_images, image_dir, files), image_dir, files)
        for rel, file in found_images.items():
            label = label_files.get(stem_key(rel))
            probed = files.probe(file, prefix + rel)
            if probed is None or (label is None and not files.keep_unlabelled(file, "image without a label file")):
                continue
            boxes = files.annotation(label, file, lambda: _boxes(label, len(names), probed["width"], probed["height"],
                                                                  check)) if label else []
            if boxes is None:
                continue
            image_id = len(images) + 1
            found = subset or next((s for s, f in subset_dirs.items() if file.resolve().is_relative_to(f)), None)
            images.append({"id": image_id, **probed, **({"subset": found} if found else {})})
            sources[image_id] = str(file)
            for cat, bbox in boxes:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                             "area": tidy(bbox[2] * bbox[3]), "iscrowd": 0})
    files.raise_if_any()
    return Dataset(TASK, categories, images, anns, sources)


def _number(v: float) -> str:
    return f"{v:.10f}".rstrip("0").rstrip(".") or "0"


def _label_text(im: dict, anns: list[dict]) -> str:
    lines = []
    for a in sorted(anns, key=lambda a: a["id"]):
        x, y, w, h = a["bbox"]
        values = [(x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"]]
        lines.append(" ".join([str(a["category_id"] - 1)] + [_number(v) for v in values]))
    return "".join(f"{s}\n" for s in lines)


def _data_yaml_text(names: list[str], splits: Assignment | None, location: Path | None) -> str:
    """Ultralytics' dataset YAML: `path` (the export folder), the split image folders and `names` by index;
    without splits the flat layout's `nc` and `names` list."""
    if splits is None:
        return yaml.safe_dump({"nc": len(names), "names": names}, sort_keys=False)
    folders = {s: f"images/{s}" for s in split_names(splits)}
    data = {"path": str(location) if location else ".", **folders, "names": dict(enumerate(names))}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write(dataset: Dataset, dest: Path, splits: Assignment | None = None, location: Path | None = None,
          **_options) -> None:
    """The Ultralytics layout: DEST/images/<split>/<name>, DEST/labels/<split>/<name stem>.txt (no `images`
    folder inside <name>; an image in no split: images/<file_name>) and DEST/data.yaml (`path: <location>`, `train:`/`val:`/`test:` folders,
    `names` by index). Without splits the flat images/<file_name>, labels/, data.yaml with `nc` and `names`."""
    names = contiguous_names(dataset, "yolo")
    by_image = dataset.annotations_by_image()
    # Ultralytics finds an image's label by swapping the LAST /images/ of its path for /labels/: an `images`
    # folder inside the name (Roboflow's train/images/a.jpg) would send it to a folder we do not write
    where = placed(dataset, splits, by_stem=True, drop="images")
    for im in dataset.images:
        split, name = where[im["id"]]
        rel = f"{split}/{name}" if split else name
        target = dest / "images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
        atomic_write_text(dest / "labels" / (stem_key(rel) + ".txt"), _label_text(im, by_image[im["id"]]))
    atomic_write_text(dest / "data.yaml", _data_yaml_text(names, splits, location))
