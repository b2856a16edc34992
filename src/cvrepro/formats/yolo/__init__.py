"""YOLO detection: `SRC/images/**` and `SRC/labels/**.txt`, one `class cx cy w h` line per box.

The label file of `images/sub/a.jpg` is `labels/sub/a.txt`; no label file (or an empty
one) means an image without objects. Coordinates are normalised by the image's
displayed size. Class names come from `SRC/data.yaml` (`names:` list, or dict
index -> name), else `SRC/classes.txt` or `SRC/labels/classes.txt` (one per line);
YOLO class i becomes category id i + 1.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cvrepro.core.fileio import CvreproError, atomic_write_text
from cvrepro.dataset.index import BOX_TOLERANCE
from cvrepro.formats.common import (
    Dataset,
    by_stem,
    labels_by_stem,
    categories_from_names,
    contiguous_names,
    find_images,
    probe_image,
    stem_key,
    tidy,
)


NAME = "yolo"
TASK = "detection"


def detect(src: Path) -> bool:
    """A YOLO source: SRC/images/ and SRC/labels/ holding .txt label files."""
    labels = src / "labels"
    return (src / "images").is_dir() and labels.is_dir() and any(labels.rglob("*.txt"))

CLASSES_IN_LABELS = "classes.txt"  # LabelImg writes the class list beside the label files: not a label file


def _class_names(src: Path) -> tuple[list, str]:
    """(names in class-index order, the file they came from)."""
    data_yaml = src / "data.yaml"
    if data_yaml.is_file():
        try:
            names = (yaml.safe_load(data_yaml.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as e:
            raise CvreproError(f"{data_yaml}: not a YAML mapping with 'names' ({e})") from None
        if isinstance(names, dict):
            if set(names) != set(range(len(names))):
                raise CvreproError(f"{data_yaml}: 'names' keys must be the class indices 0..{len(names) - 1}")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            raise CvreproError(f"{data_yaml}: 'names' must be a non-empty list or a dict index -> name")
        return names, str(data_yaml)
    for classes_txt in (src / "classes.txt", src / "labels" / CLASSES_IN_LABELS):
        if classes_txt.is_file():
            return [line.strip() for line in classes_txt.read_text().splitlines() if line.strip()], str(classes_txt)
    raise CvreproError(f"{src}: no class names: expected data.yaml (with 'names') or classes.txt")


def _boxes(path: Path, n_classes: int, width: int, height: int) -> list[tuple[int, list]]:
    boxes = []
    tol_x, tol_y = BOX_TOLERANCE / width, BOX_TOLERANCE / height  # half a pixel, as snapshot allows
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        if len(fields) != 5:
            raise CvreproError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
        try:
            cls, (cx, cy, w, h) = int(fields[0]), (float(v) for v in fields[1:])
        except ValueError:
            raise CvreproError(f"{where}: not an integer class and 4 numbers: {line.strip()!r}") from None
        if not 0 <= cls < n_classes:
            raise CvreproError(f"{where}: class index {cls} out of range 0..{n_classes - 1}")
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise CvreproError(f"{where}: coordinates must be normalised to [0, 1], got {cx} {cy} {w} {h}")
        if w <= 0 or h <= 0:
            raise CvreproError(f"{where}: box has a non-positive width or height")
        if cx - w / 2 < -tol_x or cy - h / 2 < -tol_y or cx + w / 2 > 1 + tol_x or cy + h / 2 > 1 + tol_y:
            raise CvreproError(f"{where}: box {cx} {cy} {w} {h} reaches outside the image")
        bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        boxes.append((cls + 1, [tidy(v) for v in bbox]))
    return boxes


def read(src: Path, **_options) -> Dataset:
    src = Path(src)
    image_dir, label_dir = src / "images", src / "labels"
    if not image_dir.is_dir():
        raise CvreproError(f"{image_dir}: image directory not found")
    names, names_file = _class_names(src)
    categories = categories_from_names(names, names_file)
    files = find_images(image_dir)
    stems = by_stem(files, image_dir)
    label_files = labels_by_stem(label_dir, ".txt", stems, image_dir, skip=(label_dir / CLASSES_IN_LABELS,))

    images, anns, sources = [], [], {}
    for image_id, (rel, file) in enumerate(files.items(), start=1):
        probed = probe_image(file, rel)
        images.append({"id": image_id, **probed})
        sources[image_id] = str(file)
        label = label_files.get(stem_key(rel))
        for cat, bbox in _boxes(label, len(names), probed["width"], probed["height"]) if label else []:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                         "area": tidy(bbox[2] * bbox[3]), "iscrowd": 0})
    return Dataset(TASK, categories, images, anns, sources)


def _number(v: float) -> str:
    return f"{v:.10f}".rstrip("0").rstrip(".") or "0"


def write(dataset: Dataset, dest: Path) -> None:
    """DEST/images/<file_name>, DEST/labels/<file_name stem>.txt, DEST/data.yaml (names in id order)."""
    names = contiguous_names(dataset, "yolo")
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        target = dest / "images" / im["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
        lines = []
        for a in sorted(by_image[im["id"]], key=lambda a: a["id"]):
            x, y, w, h = a["bbox"]
            values = [(x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"]]
            lines.append(" ".join([str(a["category_id"] - 1)] + [_number(v) for v in values]))
        atomic_write_text(dest / "labels" / (stem_key(im["file_name"]) + ".txt"), "".join(f"{s}\n" for s in lines))
    atomic_write_text(dest / "data.yaml", yaml.safe_dump({"nc": len(names), "names": names}, sort_keys=False))
