"""Pascal VOC detection: `SRC/JPEGImages/**` and `SRC/Annotations/**.xml`, paired by relative path and stem.

Coordinates: VOC numbers pixels from 1 and its boxes include both end pixels, so a
box covering pixel columns 0..9 (0-based) is xmin=1, xmax=10. In the project's
continuous pixel frame that box is x=0, w=10:

    x = xmin - 1,  y = ymin - 1,  w = xmax - xmin + 1,  h = ymax - ymin + 1
    xmin = x + 1,  ymin = y + 1,  xmax = x + w,        ymax = y + h

Integer boxes round-trip exactly; fractional ones are written as decimals. An
image without an XML has no objects. Class names: `SRC/classes.txt` (or
`labelmap.txt`-style `SRC/labels.txt`), one per line, if present (a name not in it
is an error); otherwise the sorted names found. Category ids are 1..K in that order.
`difficult`, `truncated`, `occluded` and `pose` are kept on the annotation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path

from PIL import Image

from cvrepro.dataset.index import box_outside
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, atomic_write_text
from cvrepro.formats.common import (
    Dataset,
    by_stem,
    labels_by_stem,
    categories_from_names,
    find_images,
    probe_image,
    stem_key,
    tidy,
)


NAME = "voc"
TASK = "detection"


def detect(src: Path) -> bool:
    """A Pascal VOC source: SRC/Annotations/ holding .xml files."""
    return (src / "Annotations").is_dir() and any((src / "Annotations").rglob("*.xml"))

OBJECT_ATTRIBUTES = ("pose", "truncated", "difficult", "occluded")


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise CvreproError(f"{path}: invalid XML at line {e.position[0]}, column {e.position[1]}") from None


def _number(text: str | None, where: str) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CvreproError(f"{where}: expected a number, got {text!r}") from None


def _attribute(text: str | None):
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _objects(path: Path, width: int, height: int) -> list[dict]:
    root = _parse(path)
    size = root.find("size")
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        declared = (_number(size.findtext("width"), f"{path}: <size><width>"),
                    _number(size.findtext("height"), f"{path}: <size><height>"))
        if declared != (width, height):
            raise CvreproError(f"{path}: <size> says {declared[0]:g}x{declared[1]:g} but the image is displayed "
                               f"{width}x{height} (EXIF orientation applied)")
    objects = []
    for i, obj in enumerate(root.findall("object"), start=1):
        where = f"{path}: <object> #{i}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise CvreproError(f"{where}: missing <name>")
        box = obj.find("bndbox")
        if box is None:
            raise CvreproError(f"{where} ({name}): missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box.findtext(k), f"{where} ({name}): <bndbox><{k}>")
                                  for k in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise CvreproError(f"{where} ({name}): <bndbox> has xmax < xmin or ymax < ymin")
        if box_outside(xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1, width, height):  # as snapshot
            raise CvreproError(f"{where} ({name}): <bndbox> {xmin:g},{ymin:g},{xmax:g},{ymax:g} lies outside "
                               f"the {width}x{height} image (VOC pixels are 1..width, 1..height)")
        extra = {k: _attribute(obj.findtext(k)) for k in OBJECT_ATTRIBUTES if obj.find(k) is not None}
        iscrowd = int(_attribute(obj.findtext("iscrowd")) == 1)
        bbox = [tidy(xmin - 1), tidy(ymin - 1), tidy(xmax - xmin + 1), tidy(ymax - ymin + 1)]
        objects.append({"name": name, "bbox": bbox, "iscrowd": iscrowd, **extra})
    return objects


def _declared_names(src: Path) -> tuple[list[str], str] | None:
    for name in ("classes.txt", "labels.txt"):
        path = src / name
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()], str(path)
    return None


def read(src: Path, **_options) -> Dataset:
    src = Path(src)
    image_dir, xml_dir = src / "JPEGImages", src / "Annotations"
    for folder in (image_dir, xml_dir):
        if not folder.is_dir():
            raise CvreproError(f"{folder}: directory not found")
    files = find_images(image_dir)
    stems = by_stem(files, image_dir)
    xmls = labels_by_stem(xml_dir, ".xml", stems, image_dir)

    images, sources, objects = [], {}, {}
    for image_id, (rel, file) in enumerate(files.items(), start=1):
        probed = probe_image(file, rel)
        images.append({"id": image_id, **probed})
        sources[image_id] = str(file)
        xml = xmls.get(stem_key(rel))
        objects[image_id] = (xml, _objects(xml, probed["width"], probed["height"]) if xml else [])

    declared = _declared_names(src)
    names = declared[0] if declared else sorted({o["name"] for _, objs in objects.values() for o in objs})
    categories = categories_from_names(names, declared[1] if declared else str(xml_dir))
    ids = {c["name"]: c["id"] for c in categories}
    anns = []
    for image_id, (xml, objs) in objects.items():
        for i, o in enumerate(objs, start=1):
            if o["name"] not in ids:
                raise CvreproError(f"{xml}: <object> #{i}: unknown class {o['name']!r} (not in {declared[1]})")
            bbox = o.pop("bbox")
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": ids[o.pop("name")],
                         "bbox": bbox, "area": tidy(bbox[2] * bbox[3]), **o})
    return Dataset(TASK, categories, images, anns, sources)


def _text(parent: ET.Element, tag: str, value) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(value)
    return el


def write(dataset: Dataset, dest: Path) -> None:
    """DEST/JPEGImages/<file_name>, DEST/Annotations/<file_name stem>.xml, DEST/classes.txt (names in id order)."""
    names = dataset.names()
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        data = dataset.read(dataset.image_source[im["id"]])
        target = dest / "JPEGImages" / im["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        with Image.open(BytesIO(data)) as pil:
            depth = len(pil.getbands())
        root = ET.Element("annotation")
        _text(root, "folder", "JPEGImages")
        _text(root, "filename", im["file_name"].rsplit("/", 1)[-1])
        size = ET.SubElement(root, "size")
        for tag, value in (("width", im["width"]), ("height", im["height"]), ("depth", depth)):
            _text(size, tag, value)
        _text(root, "segmented", 0)
        for a in sorted(by_image[im["id"]], key=lambda a: a["id"]):
            obj = ET.SubElement(root, "object")
            _text(obj, "name", names[a["category_id"]])
            for key in OBJECT_ATTRIBUTES:
                if key in a:
                    _text(obj, key, a[key])
            if a.get("iscrowd"):
                _text(obj, "iscrowd", 1)  # not VOC, but kept so a crowd box survives a round trip
            x, y, w, h = a["bbox"]
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
                _text(box, tag, tidy(value))
        ET.indent(root)
        xml = dest / "Annotations" / (stem_key(im["file_name"]) + ".xml")
        atomic_write_bytes(xml, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
    ordered = [names[i] for i in sorted(names)]
    atomic_write_text(dest / "classes.txt", "".join(f"{n}\n" for n in ordered))
