"""COCO detection: one annotations JSON (`SRC/annotations.json` or --annotations) and the images it names.

An image's `file_name` is looked up under `SRC/images/`, then `SRC/`, then beside the
JSON. Category ids become 1..K in the order of the source ids (COCO's own 1..90 with
gaps become 1..80); image and annotation ids, extra image keys (attributes), extra
category keys (`supercategory`) and extra annotation keys (`area`, `iscrowd`,
`segmentation`, ...) are kept.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError, read_json, write_json
from cvrepro.core.problems import is_number
from cvrepro.core.relpaths import normalize_relpath
from cvrepro.formats.common import Dataset, probe_image


NAME = "coco"
TASK = "detection"


def detect(src: Path) -> bool:
    """A COCO source: an annotations JSON at SRC/annotations.json."""
    return (src / "annotations.json").is_file()


def _annotations_file(src: Path, annotations: Path | None) -> Path:
    if annotations is not None:
        return Path(annotations)
    if src.is_file():
        return src
    return src / "annotations.json"


def _list(coco: dict, key: str, path: Path) -> list:
    value = coco.get(key, [] if key == "annotations" else None)
    if not isinstance(value, list):
        raise CvreproError(f"{path}: missing or not a list: '{key}'")
    return value


def _categories(categories: list, path: Path) -> tuple[list[dict], dict]:
    """(categories with ids 1..K in source-id order, source id -> new id)."""
    seen_names: set[str] = set()
    by_id: dict[int, dict] = {}
    for i, c in enumerate(categories):
        where = f"{path}: categories[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str) \
                or not c["name"]:
            raise CvreproError(f"{where}: needs an integer 'id' and a non-empty string 'name'")
        if c["id"] in by_id or c["name"] in seen_names:
            raise CvreproError(f"{where}: duplicate category id {c['id']} or name {c['name']!r}")
        by_id[c["id"]] = c
        seen_names.add(c["name"])
    remap = {old: new for new, old in enumerate(sorted(by_id), start=1)}
    return [{**by_id[old], "id": remap[old]} for old in sorted(by_id)], remap


def _find_image(name: str, src_dir: Path, ann_dir: Path) -> Path | None:
    for folder in (src_dir / "images", src_dir, ann_dir):
        if (folder / name).is_file():
            return folder / name
    return None


def read(src: Path, annotations: Path | None = None, **_options) -> Dataset:
    src = Path(src)
    path = _annotations_file(src, annotations)
    coco = read_json(path)
    if not isinstance(coco, dict):
        raise CvreproError(f"{path}: expected a JSON object with images, annotations and categories")
    categories, remap = _categories(_list(coco, "categories", path), path)
    src_dir = src.parent if src.is_file() else src

    images, sources, sizes = [], {}, {}
    for i, e in enumerate(_list(coco, "images", path)):
        where = f"{path}: images[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("id"), int):
            raise CvreproError(f"{where}: needs an integer 'id'")
        name = normalize_relpath(e.get("file_name"), backslash_is_separator=True)
        if name is None:
            raise CvreproError(f"{where} (image id {e['id']}): 'file_name' {e.get('file_name')!r} must be a "
                               "relative path inside the dataset")
        file = _find_image(name, src_dir, path.parent)
        if file is None:
            raise CvreproError(f"{where} (image id {e['id']}): image {name!r} not found under "
                               f"{src_dir / 'images'}, {src_dir} or {path.parent}")
        probed = probe_image(file, name)
        for key in ("width", "height"):
            if key in e and e[key] != probed[key]:
                raise CvreproError(f"{where} (image id {e['id']}): '{key}' is {e[key]!r} but {file} is displayed "
                                   f"{probed['width']}x{probed['height']} (EXIF orientation applied)")
        entry = {k: v for k, v in e.items() if k != "mask_file"}  # a mask_file would point into the source tree
        images.append({**entry, **probed})
        sources[e["id"]] = str(file)
        sizes[e["id"]] = (probed["width"], probed["height"])

    anns = []
    for i, a in enumerate(_list(coco, "annotations", path)):
        ident = f" (annotation id {a['id']})" if isinstance(a, dict) and "id" in a else ""
        where = f"{path}: annotations[{i}]{ident}"
        if not isinstance(a, dict) or any(k not in a for k in ("id", "image_id", "category_id", "bbox")):
            raise CvreproError(f"{where}: needs 'id', 'image_id', 'category_id' and 'bbox'")
        if a["category_id"] not in remap:
            raise CvreproError(f"{where}: 'category_id' {a['category_id']!r} is not in 'categories'")
        if a["image_id"] not in sizes:
            raise CvreproError(f"{where}: 'image_id' {a['image_id']!r} is not in 'images'")
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
            raise CvreproError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise CvreproError(f"{where}: 'bbox' {bbox} has a non-positive width or height")
        anns.append({**a, "category_id": remap[a["category_id"]]})
    return Dataset(TASK, categories, images, anns, sources)


def write(dataset: Dataset, dest: Path) -> None:
    """DEST/annotations.json (the project's index, category ids as they are) and DEST/images/<file_name>."""
    for im in dataset.images:
        target = dest / "images" / im["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
    images = [{k: v for k, v in im.items() if k != "mask_file"} for im in dataset.images]
    write_json(dest / "annotations.json", {"images": images, "annotations": dataset.annotations,
                                           "categories": dataset.categories})
