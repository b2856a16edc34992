"""Pascal VOC detection XML, in the layouts people have:

- the VOC devkit: `SRC/JPEGImages/**` and `SRC/Annotations/**.xml`, paired by relative path and stem;
- LabelImg: one folder of XML files beside one folder of images (`annotations/` + `images/`, any names), or
  the XML files beside the images in SRC itself. An XML is paired with the image its `<filename>` names (in
  the same relative folder, then at the top), else with the image of its stem; `<path>` (the labeller's
  machine) is ignored.

An image without an XML is unlabelled (`--unlabelled`); an XML without an image or a second XML for one
image is a bad file (`--bad-files`).

Coordinates (`--voc-coords`): VOC XML holds xmin, ymin, xmax, ymax, and tools disagree
on what the numbers mean.

- `plain` (default): the numbers are edges in the continuous pixel frame, as CVAT,
  Datumaro, globox and LabelImg read and write them: x = xmin, w = xmax - xmin.
- `devkit`: the PASCAL devkit's 1-based inclusive pixels (a box over pixel columns
  0..9 is xmin=1, xmax=10): x = xmin - 1, w = xmax - xmin + 1.

Either way a box that touches an image edge is never refused because of the convention:
an edge up to one pixel beyond the border (xmin = 0 read as devkit, xmax = width + 1
read as plain) is put on the border.

Classes: `SRC/labelmap.txt` (Datumaro/CVAT: `name:r,g,b:parts:actions`, `background`
skipped), else `SRC/classes.txt` or `SRC/labels.txt` (one per line); a name not listed
is an error. Without any, the sorted names found. Category ids are 1..K in that order.
Subsets: `SRC/ImageSets/Main/<subset>.txt` (one image id a line) give each image the
attribute `subset` (`trainval` is skipped when `train` or `val` exists; `default.txt`, Datumaro's list of
the images in no subset, gives none).
`difficult`, `truncated`, `occluded` and `pose` are kept on the annotation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path

from PIL import Image

from cvrepro.core.fileio import CvreproError, atomic_write_bytes, atomic_write_text
from cvrepro.formats.common import (
    BadAnnotation,
    BoxCheck,
    Dataset,
    FileCheck,
    by_stem,
    categories_from_names,
    find_images,
    is_image_file,
    stem_key,
    tidy,
)
from cvrepro.formats.splits import NAMED, UNSPLIT, Assignment


NAME = "voc"
TASK = "detection"
WRITES_SPLITS = NAMED  # ImageSets/Main/<subset>.txt, any name


LOOKS_FOR = "JPEGImages/ + Annotations/*.xml, a folder of XML beside a folder of images, or XML beside images"


def _xmls(folder: Path) -> list[Path]:
    """The .xml files under folder (any depth, any case), hidden ones skipped."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() == ".xml"
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def layout(src: Path) -> tuple[Path, Path, str, str] | None:
    """(image folder, XML folder, 'devkit' or 'labelimg', a description) of a VOC source, or None."""
    if not src.is_dir():
        return None
    if (src / "JPEGImages").is_dir() and (src / "Annotations").is_dir() and _xmls(src / "Annotations"):
        return src / "JPEGImages", src / "Annotations", "devkit", "VOC devkit: JPEGImages/ + Annotations/"
    dirs = [p for p in sorted(src.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    xml_dirs = [d for d in dirs if _xmls(d) and not find_images(d)]
    image_dirs = [d for d in dirs if d not in xml_dirs and find_images(d)]
    if len(xml_dirs) == 1 and len(image_dirs) == 1:
        xml_dir, image_dir = xml_dirs[0], image_dirs[0]
        return image_dir, xml_dir, "labelimg", f"LabelImg: {xml_dir.name}/ beside {image_dir.name}/"
    top = [p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix.lower() == ".xml" for p in top) and any(is_image_file(p) for p in top):
        return src, src, "labelimg", "LabelImg: XML beside the images"
    return None


def detect(src: Path) -> str | None:
    """The VOC layout of SRC, described (None: not VOC)."""
    found = layout(src)
    return found[3] if found else None


OBJECT_ATTRIBUTES = ("pose", "truncated", "difficult", "occluded")
COORDS = ("plain", "devkit")  # --voc-coords; the default first
SHIFT = {"plain": 0, "devkit": 1}  # xmin - x: how far the written min edge is from the continuous one


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise BadAnnotation(f"{path}: invalid XML at line {e.position[0]}, column {e.position[1]}") from None


def _number(text: str | None, where: str) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadAnnotation(f"{where}: expected a number, got {text!r}") from None


def _attribute(text: str | None):
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _on_edge(v: float, limit: int) -> float:
    """An edge up to one pixel beyond the border (the other convention's edge box) is put on the border."""
    return 0.0 if -1 <= v < 0 else float(limit) if limit < v <= limit + 1 else v


def _objects(path: Path, width: int, height: int, coords: str, check: BoxCheck) -> list[dict]:
    root = _parse(path)
    size = root.find("size")
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        declared = (_number(size.findtext("width"), f"{path}: <size><width>"),
                    _number(size.findtext("height"), f"{path}: <size><height>"))
        if declared != (width, height) and declared != (0, 0):  # CVAT writes 0x0 when it did not know
            raise BadAnnotation(f"{path}: <size> says {declared[0]:g}x{declared[1]:g} but the image is displayed "
                               f"{width}x{height} (EXIF orientation applied)")
    objects = []
    shift = SHIFT[coords]
    for i, obj in enumerate(root.findall("object"), start=1):
        where = f"<object> #{i}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise BadAnnotation(f"{path}: {where}: missing <name>")
        box = obj.find("bndbox")
        if box is None:
            raise BadAnnotation(f"{path}: {where} ({name}): missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box.findtext(k), f"{path}: {where} ({name}): <bndbox><{k}>")
                                  for k in ("xmin", "ymin", "xmax", "ymax"))
        x0, y0 = _on_edge(xmin - shift, width), _on_edge(ymin - shift, height)
        x1, y1 = _on_edge(xmax, width), _on_edge(ymax, height)
        bbox = check([x0, y0, x1 - x0, y1 - y0], width, height, str(path), f"{where} ({name})")
        if bbox is None:
            continue
        extra = {k: _attribute(obj.findtext(k)) for k in OBJECT_ATTRIBUTES if obj.find(k) is not None}
        iscrowd = int(_attribute(obj.findtext("iscrowd")) == 1)
        objects.append({"name": name, "bbox": [tidy(v) for v in bbox], "iscrowd": iscrowd, **extra})
    return objects


def _labelmap(path: Path) -> list[str]:
    """Class names of a Datumaro/CVAT labelmap.txt (`name:color:parts:actions`, `#` comments), background left out."""
    names = [line.split(":", 1)[0].strip() for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return [n for n in names if n != "background"]


def _declared_names(src: Path) -> tuple[list[str], str] | None:
    if (src / "labelmap.txt").is_file():
        return _labelmap(src / "labelmap.txt"), str(src / "labelmap.txt")
    for name in ("classes.txt", "labels.txt"):
        path = src / name
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()], str(path)
    return None


def subsets(src: Path) -> dict[str, str]:
    """image id (path under JPEGImages without extension) -> subset, from ImageSets/Main/<subset>.txt."""
    folder = src / "ImageSets" / "Main"
    files = {p.stem: p for p in sorted(folder.glob("*.txt"))} if folder.is_dir() else {}
    if "trainval" in files and ({"train", "val"} & set(files)):
        del files["trainval"]
    files.pop(UNSPLIT, None)  # Datumaro's `default.txt`: the images in no subset
    out: dict[str, str] = {}
    for subset, path in files.items():
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if any(len(parts) != 1 for parts in lines):
            continue  # `<class>_<subset>.txt`: id and a 1/-1 flag per line, not a subset list
        for (ident,) in lines:
            if ident in out and out[ident] != subset:
                raise CvreproError(f"{path}: image {ident!r} is also in subset {out[ident]!r}")
            out[ident] = subset
    return out


def _pair(xmls: list[Path], xml_dir: Path, files: dict[str, Path], kind: str, image_dir: Path,
          check: FileCheck) -> dict[str, Path]:
    """image relpath -> its XML: by `<filename>` (LabelImg) then by stem; an XML without an image, or a second
    one for an image, is a bad file."""
    stems = by_stem(files, image_dir, check)
    out: dict[str, Path] = {}
    for xml in xmls:
        rel = xml.relative_to(xml_dir).as_posix()
        target = None
        if kind == "labelimg":
            try:
                name = (_parse(xml).findtext("filename") or "").strip().replace("\\", "/")
            except BadAnnotation:  # paired by its stem; reading it reports the problem (and leaves its image out)
                name = ""
            folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
            target = next((c for c in (folder + name, name) if name and c in files), None)
        target = target or stems.get(stem_key(rel))
        if target is None:
            check.bad(xml, f"annotation without an image: no image of that name under {check.rel(image_dir)}")
        elif target in out:
            check.bad(xml, f"a second annotation file for {check.rel(files[target])} (kept {check.rel(out[target])})")
        else:
            out[target] = xml
    return out


def read(src: Path, voc_coords: str = "plain", check: BoxCheck | None = None, files: FileCheck | None = None,
         **_options) -> Dataset:
    src, check = Path(src), check or BoxCheck()
    files_check = files or FileCheck(src=src)
    if voc_coords not in COORDS:
        raise CvreproError(f"--voc-coords {voc_coords!r}: choose one of {', '.join(COORDS)}")
    found = layout(src)
    if found is None:
        raise CvreproError(f"{src}: not a VOC source: expected {LOOKS_FOR}")
    image_dir, xml_dir, kind, _ = found
    images_found = find_images(image_dir)
    xmls = _pair(_xmls(xml_dir), xml_dir, images_found, kind, image_dir, files_check)

    subset_of = subsets(src)
    images, sources, objects = [], {}, {}
    for rel, file in images_found.items():
        xml = xmls.get(rel)
        probed = files_check.probe(file, rel)
        if probed is None or (xml is None and not files_check.keep_unlabelled(file, "image without an XML")):
            continue
        objs = files_check.annotation(xml, file, lambda: _objects(xml, probed["width"], probed["height"], voc_coords,
                                                                  check)) if xml else []
        if objs is None:
            continue
        image_id = len(images) + 1
        subset = subset_of.get(stem_key(rel))
        images.append({"id": image_id, **probed, **({"subset": subset} if subset else {})})
        sources[image_id] = str(file)
        objects[image_id] = (xml, objs)
    files_check.raise_if_any()

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


def write(dataset: Dataset, dest: Path, voc_coords: str = "plain", splits: Assignment | None = None,
          **_options) -> None:
    """DEST/JPEGImages/<file_name>, DEST/Annotations/<file_name stem>.xml, DEST/ImageSets/Main/<split>.txt
    (by `splits`; `default` for an image in none, and for all without splits), and the class order in
    DEST/labelmap.txt (Datumaro's) and DEST/classes.txt: what CVAT/Datumaro and globox read back."""
    if voc_coords not in COORDS:
        raise CvreproError(f"--voc-coords {voc_coords!r}: choose one of {', '.join(COORDS)}")
    shift = SHIFT[voc_coords]
    names = dataset.names()
    image_sets: dict[str, list[str]] = {}
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        data = dataset.read(dataset.image_source[im["id"]])
        target = dest / "JPEGImages" / im["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        image_sets.setdefault((splits or {}).get(im["id"]) or UNSPLIT, []).append(stem_key(im["file_name"]))
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
            for tag, value in (("xmin", x + shift), ("ymin", y + shift), ("xmax", x + w), ("ymax", y + h)):
                _text(box, tag, tidy(value))
        ET.indent(root)
        xml = dest / "Annotations" / (stem_key(im["file_name"]) + ".xml")
        atomic_write_bytes(xml, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
    ordered = [names[i] for i in sorted(names)]
    atomic_write_text(dest / "classes.txt", "".join(f"{n}\n" for n in ordered))
    atomic_write_text(dest / "labelmap.txt", "# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                      + "".join(f"{n}:{_colour(i)}::\n" for i, n in enumerate(ordered, start=1)))
    for subset, ids in image_sets.items():
        atomic_write_text(dest / "ImageSets" / "Main" / f"{subset}.txt", "".join(f"{i}\n" for i in ids))


def _colour(i: int) -> str:
    """The VOC palette colour of class i (what Datumaro writes in a labelmap)."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((i >> 0) & 1) << shift
        g |= ((i >> 1) & 1) << shift
        b |= ((i >> 2) & 1) << shift
        i >>= 3
    return f"{r},{g},{b}"
