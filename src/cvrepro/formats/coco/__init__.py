"""COCO detection, in the two layouts people have:

- one annotations JSON (`SRC/annotations.json`, `--annotations FILE`, or SRC itself), images looked up under
  `SRC/images/`, then `SRC/`, then beside the JSON;
- CVAT/Datumaro: `SRC/annotations/instances_<subset>.json` with images in `SRC/images/<subset>/`. Each image
  gets the attribute `subset` (except Datumaro's `default`); with several subsets its name under data/raw is
  `<subset>/<file_name>`, and ids are renumbered if two subsets use the same ones.

Category ids become 1..K in the order of the source ids (COCO's own 1..90 with gaps become 1..80); image and
annotation ids, extra image keys (attributes), extra category keys (`supercategory`) and extra annotation keys
(`area`, `iscrowd`, `segmentation`, ...) are kept. Export writes the CVAT/Datumaro layout, one subset per split.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError, read_json, write_json
from cvrepro.core.problems import is_number
from cvrepro.core.relpaths import normalize_relpath
from cvrepro.formats.common import BoxCheck, Dataset, FileCheck
from cvrepro.formats.splits import NAMED, Assignment, placed


NAME = "coco"
TASK = "detection"
WRITES_SPLITS = NAMED  # one instances_<subset>.json per subset, any name


DEFAULT_SUBSET = "default"  # Datumaro's name for a dataset without subsets


LOOKS_FOR = "annotations.json, or annotations/instances_<subset>.json (CVAT/Datumaro)"


def detect(src: Path) -> str | None:
    """A COCO source, its layout described: SRC/annotations.json or SRC/annotations/instances_<subset>.json."""
    if (src / "annotations.json").is_file():
        return "COCO: annotations.json"
    subsets = _subset_files(src)
    return f"CVAT/Datumaro: annotations/instances_{{{','.join(subsets)}}}.json" if subsets else None


def _subset_files(src: Path) -> dict[str, Path]:
    folder = src / "annotations"
    return {p.stem[len("instances_"):]: p for p in sorted(folder.glob("instances_*.json"))} if folder.is_dir() else {}


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


def _read_images(coco: dict, path: Path, folders: tuple[Path, ...], prefix: str, subset: str | None,
                 files: FileCheck) -> tuple[list[dict], dict, dict, set]:
    """(images, image id -> source file, image id -> size, ids of entries dropped as bad files)."""
    images, sources, sizes, dropped, names = [], {}, {}, set(), {}
    for i, e in enumerate(_list(coco, "images", path)):
        where = f"{path}: images[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("id"), int):
            raise CvreproError(f"{where}: needs an integer 'id'")
        name = normalize_relpath(e.get("file_name"), backslash_is_separator=True)
        if name is None:
            raise CvreproError(f"{where} (image id {e['id']}): 'file_name' {e.get('file_name')!r} must be a "
                               "relative path inside the dataset")
        file = next((f / name for f in folders if (f / name).is_file()), None)
        entry = f"images[{i}] (image id {e['id']}) of {files.rel(path)}"
        if file is None:
            files.bad(folders[0] / name, f"{entry}: image not found under "
                                         f"{', '.join(files.rel(f) for f in folders)}")
        elif name in names:
            files.bad(file, f"{entry}: a second entry for this file (kept image id {names[name]})")
        probed = files.probe(file, prefix + name) if file is not None and name not in names else None
        if probed is None:
            dropped.add(e["id"])
            continue
        names[name] = e["id"]
        for key in ("width", "height"):
            if key in e and e[key] not in (probed[key], 0):  # CVAT writes 0 when it did not know
                raise CvreproError(f"{where} (image id {e['id']}): '{key}' is {e[key]!r} but {file} is displayed "
                                   f"{probed['width']}x{probed['height']} (EXIF orientation applied)")
        entry = {k: v for k, v in e.items() if k != "mask_file"}  # a mask_file would point into the source tree
        images.append({**entry, **probed, **({"subset": subset} if subset else {})})
        sources[e["id"]] = str(file)
        sizes[e["id"]] = (probed["width"], probed["height"])
    return images, sources, sizes, dropped


def _read_one(path: Path, folders: tuple[Path, ...], check: BoxCheck, files: FileCheck, prefix: str = "",
              subset: str | None = None) -> tuple[list[dict], list[dict], list[dict], dict]:
    """(categories, images, annotations, image id -> source file) of one COCO JSON."""
    coco = read_json(path)
    if not isinstance(coco, dict):
        raise CvreproError(f"{path}: expected a JSON object with images, annotations and categories")
    categories, remap = _categories(_list(coco, "categories", path), path)
    images, sources, sizes, dropped = _read_images(coco, path, folders, prefix, subset, files)

    anns, labelled = [], set()
    for i, a in enumerate(_list(coco, "annotations", path)):
        ident = f"annotation id {a['id']}" if isinstance(a, dict) and "id" in a else f"annotations[{i}]"
        where = f"{path}: annotations[{i}]" + (f" ({ident})" if "id" in ident else "")
        if not isinstance(a, dict) or any(k not in a for k in ("id", "image_id", "category_id", "bbox")):
            raise CvreproError(f"{where}: needs 'id', 'image_id', 'category_id' and 'bbox'")
        if a["category_id"] not in remap:
            raise CvreproError(f"{where}: 'category_id' {a['category_id']!r} is not in 'categories'")
        if a["image_id"] in dropped:
            continue  # its image is a bad file, reported as such
        if a["image_id"] not in sizes:
            raise CvreproError(f"{where}: 'image_id' {a['image_id']!r} is not in 'images'")
        labelled.add(a["image_id"])
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
            raise CvreproError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {bbox!r}")
        kept = check([float(v) for v in bbox], *sizes[a["image_id"]], str(path), ident)
        if kept is None:
            continue
        fixed = {"bbox": kept, "area": kept[2] * kept[3]} if kept != [float(v) for v in bbox] else {}
        anns.append({**a, "category_id": remap[a["category_id"]], **fixed})
    unlabelled = f"has no annotation in {files.rel(path)}"
    images = [im for im in images if im["id"] in labelled
              or files.keep_unlabelled(sources[im["id"]], f"image id {im['id']} {unlabelled}")]
    return categories, images, anns, {im["id"]: sources[im["id"]] for im in images}


def _renumber(parts: list[tuple[list, list, list, dict]]) -> None:
    """Give every image and annotation an id unique over all subsets (Datumaro numbers each subset from 1)."""
    image_ids = [im["id"] for _, images, _, _ in parts for im in images]
    ann_ids = [a["id"] for _, _, anns, _ in parts for a in anns]
    if len(set(image_ids)) == len(image_ids) and len(set(ann_ids)) == len(ann_ids):
        return
    next_image, next_ann = 1, 1
    for k, (cats, images, anns, sources) in enumerate(parts):
        new = {}
        for im in images:
            new[im["id"]], im["id"] = next_image, next_image
            next_image += 1
        for a in anns:
            a["id"], a["image_id"] = next_ann, new[a["image_id"]]
            next_ann += 1
        parts[k] = (cats, images, anns, {new[i]: f for i, f in sources.items()})


def read(src: Path, annotations: Path | None = None, check: BoxCheck | None = None, files: FileCheck | None = None,
         **_options) -> Dataset:
    src, check = Path(src), check or BoxCheck()
    files = files or FileCheck(src=src)
    subsets = _subset_files(src) if annotations is None and src.is_dir() and not (src / "annotations.json").is_file() \
        else {}
    if not subsets:
        path = _annotations_file(src, annotations)
        src_dir = src.parent if src.is_file() else src
        categories, images, anns, sources = _read_one(path, (src_dir / "images", src_dir, path.parent), check, files)
        files.raise_if_any()
        return Dataset(TASK, categories, images, anns, sources)
    parts = []
    for subset, path in subsets.items():
        prefix = "" if subset == DEFAULT_SUBSET else f"{subset}/"
        folders = (src / "images" / subset, src / "images", src)
        parts.append(_read_one(path, folders, check, files, prefix, None if subset == DEFAULT_SUBSET else subset))
    files.raise_if_any()
    first = next(iter(subsets.values()))
    for (cats, *_), (subset, path) in zip(parts, subsets.items()):
        if [c["name"] for c in cats] != [c["name"] for c in parts[0][0]]:
            raise CvreproError(f"{path}: its categories differ from those of {first}")
    _renumber(parts)
    return Dataset(TASK, parts[0][0], [im for p in parts for im in p[1]], [a for p in parts for a in p[2]],
                   {i: f for p in parts for i, f in p[3].items()})


def write(dataset: Dataset, dest: Path, splits: Assignment | None = None, **_options) -> None:
    """The CVAT/Datumaro layout: DEST/annotations/instances_<split>.json and DEST/images/<split>/<name>, by
    `splits` (`default` for an image in none, and for all without splits; a leading `<split>/` of the
    file name is not repeated). Category ids and names as they are; the image attribute `subset` is kept."""
    groups: dict[str, list[dict]] = {}
    where = placed(dataset, splits, unsplit=DEFAULT_SUBSET)
    for im in dataset.images:
        groups.setdefault(where[im["id"]][0], []).append(im)
    by_image = dataset.annotations_by_image()
    for subset, members in groups.items():
        images = []
        for im in members:
            name = where[im["id"]][1]
            target = dest / "images" / subset / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
            images.append({**{k: v for k, v in im.items() if k != "mask_file"}, "file_name": name})
        anns = [a for im in members for a in by_image[im["id"]]]
        write_json(dest / "annotations" / f"instances_{subset}.json",
                   {"images": images, "annotations": anns, "categories": dataset.categories})
