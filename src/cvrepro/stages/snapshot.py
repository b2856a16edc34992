"""snapshot: check the raw images and COCO labels, and pin them in one manifest.

The manifest (`data/snapshot/manifest.json`) records every image's path, content
hash, size and labels hash, the class map and dataset statistics, and derives a
`snapshot_id` from that content alone: same data and labels, same id.

Nothing is written unless the whole dataset checks out; problems are collected
(up to MAX_PROBLEMS) and raised together as one CvreproError, one per line, each
naming the file and the offending id or field.

Built for 100 000+ images: images are read one at a time (never all pixels in
memory), JPEGs are decoded at reduced scale, PNGs are CRC-checked rather than
decoded, and the md5s DVC computed at `dvc add data/raw` are reused when they
match what is on disk.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..io import CvreproError, canonical_json, read_json, sha256_bytes, write_json
from ..paths import ANNOTATIONS, MANIFEST, RAW_DIR

SCHEMA = "cvrepro.manifest/1"
TASKS = ("detection", "segmentation", "classification")  # label layouts: docs/label-formats.md
MAX_PROBLEMS = 20
BOX_TOLERANCE = 0.5  # px: annotation tools round box edges; half a pixel over the border is not an error
# Keys the COCO format defines for an image; every other key is a user attribute.
STANDARD_IMAGE_KEYS = {"id", "file_name", "width", "height", "license", "flickr_url", "coco_url", "date_captured"}
LABEL_IMAGE_KEYS = {"mask_file"}  # labels kept on the image entry (segmentation): not attributes either
MASK_MODES = ("L", "P")  # single-channel 8-bit; a palette PNG's indices are the class ids
# Below this many images a process pool costs more to start than it saves.
POOL_MIN_IMAGES = 500


def _default_workers() -> int:
    """2 workers on Linux with CPUs to spare; on a 1-2 CPU box the pool measured no faster than serial."""
    return 2 if sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= 3 else 1


# --------------------------------------------------------------------------- problems


class _Problems:
    """Collects user-fixable problems so one run reports many of them, not just the first."""

    def __init__(self, limit: int = MAX_PROBLEMS):
        self.items: list[str] = []
        self.limit = limit

    def add(self, message: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(message)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise CvreproError(self.items[0])
        more = f" (stopped after the first {self.limit})" if self.full else ""
        lines = "\n".join(f"  {m}" for m in self.items)
        raise CvreproError(f"{len(self.items)} problems in the dataset{more}; no manifest written:\n{lines}")


_MISSING = object()  # an image entry without a mask_file key


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# --------------------------------------------------------------------------- DVC listing


def _dvc_cache_dir(root: Path) -> Path:
    """The local cache: `.dvc/cache` unless `dvc cache dir` moved it (relative paths are relative to .dvc/)."""
    cache = root / ".dvc" / "cache"
    for name in ("config", "config.local"):  # config.local wins, so read it last
        parser = configparser.ConfigParser()
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
        if parser.has_option("cache", "dir"):
            cache = root / ".dvc" / Path(parser.get("cache", "dir").strip("'\""))
    return cache


def dvc_listing(root: Path = Path(".")) -> dict[str, str] | None:
    """relpath (under data/raw, posix) → md5, as DVC recorded it at `dvc add data/raw`; None if unavailable.

    Reads `data/raw.dvc` for the directory hash (`<md5>.dir`, DVC 3 `hash: md5`,
    i.e. the plain md5 of the bytes) and loads that directory object from the
    local cache: `<cache>/files/md5/<first 2 hex>/<rest>.dir`, a JSON list of
    {"md5", "relpath", ...}.
    """
    root = Path(root)
    try:
        with (root / f"{RAW_DIR}.dvc").open() as f:
            out = yaml.safe_load(f)["outs"][0]
        dir_md5 = out["md5"]
        # DVC 2 files (no `hash: md5`) used md5 with dos2unix on text files: not the bytes' md5.
        if out.get("hash") != "md5" or not dir_md5.endswith(".dir"):
            return None
        obj = _dvc_cache_dir(root) / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
        with obj.open("rb") as f:
            entries = json.load(f)
        return {e["relpath"]: e["md5"] for e in entries}  # DVC writes posix relpaths
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, yaml.YAMLError):
        return None


def _files_on_disk(raw_dir: Path) -> set[str]:
    """Every file under raw_dir as a posix relpath (symlinked dirs not followed, like the listing)."""
    found = set()
    for dirpath, _dirs, files in os.walk(raw_dir):
        rel = os.path.relpath(dirpath, raw_dir).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        found.update(prefix + name for name in files)  # plain strings: pathlib costs ~10 µs a file
    return found


# --------------------------------------------------------------------------- one image (may run in a worker)


def _check_decodes(data: bytes) -> tuple[int, int]:
    """Open and check the image; return its stored (width, height). Raises if it is broken."""
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
        if im.format == "PNG":
            im.verify()  # CRC of every chunk through IEND: catches truncation without inflating pixels
        elif im.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras
            # Decode at 1/8 scale: libjpeg still walks all entropy-coded data, so truncation shows.
            im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        else:
            im.load()
    return size


def _inspect_image(path: str, want_md5: bool) -> tuple[str | None, int, str | None, tuple[int, int] | None]:
    """(error, size in bytes, md5 or None, (width, height)). Reads the file once; errors are returned, not raised,
    so a worker process never dies on a bad image."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "file not found", 0, None, None
    except IsADirectoryError:
        return "is a directory, not an image file", 0, None, None
    except OSError as e:
        return f"cannot read: {e.strerror or e}", 0, None, None
    md5 = hashlib.md5(data).hexdigest() if want_md5 else None
    try:
        dims = _check_decodes(data)
    except UnidentifiedImageError:
        return "unreadable: not an image format PIL can identify", len(data), md5, None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for broken files
        return f"unreadable or truncated image ({type(e).__name__}: {e})", len(data), md5, None
    return None, len(data), md5, dims


def _inspect_all(jobs: list[tuple[str, bool]], workers: int) -> Iterator[tuple]:
    """Results of _inspect_image for every job, in order, with a progress bar on stderr."""
    if workers <= 1 or len(jobs) < POOL_MIN_IMAGES:
        yield from _with_progress((_inspect_image(*job) for job in jobs), len(jobs))
        return
    # fork, not spawn: spawn re-imports the caller's __main__, which breaks any script without a
    # `__name__ == "__main__"` guard. map() forks the workers now, before tqdm may start its monitor
    # thread (forking a process that runs threads can deadlock).
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        results = pool.map(_inspect_image, *zip(*jobs), chunksize=32)
        try:
            yield from _with_progress(results, len(jobs))
        finally:  # the caller may stop early (too many problems): drop queued work
            pool.shutdown(cancel_futures=True)


def _with_progress(results: Iterable[tuple], total: int) -> Iterator[tuple]:
    with tqdm(total=total, desc="snapshot", unit="img", disable=None, file=sys.stderr) as bar:
        for r in results:
            bar.update()
            yield r


# --------------------------------------------------------------------------- annotations


def _load_coco(ann_path: Path, problems: _Problems, task: str = "detection") -> tuple[list, list, list]:
    coco = read_json(ann_path)  # raises CvreproError naming the file on bad JSON
    if not isinstance(coco, dict):
        raise CvreproError(f"{ann_path}: expected a JSON object with images, annotations and categories")
    lists = []
    for key in ("images", "annotations", "categories"):
        if key == "annotations" and task == "segmentation" and key not in coco:
            lists.append([])  # segmentation labels live in each image's mask_file
            continue
        if not isinstance(coco.get(key), list):
            what = "missing required key" if key not in coco else "expected a list for key"
            problems.add(f"{ann_path}: {what} '{key}'")
        lists.append(coco.get(key) if isinstance(coco.get(key), list) else [])
    problems.raise_if_any()  # nothing further makes sense without the three lists
    return lists[0], lists[1], lists[2]


_SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}


def _entries(items: list, kind: str, required: Iterable[str], ann_path: Path, problems: _Problems) -> Iterator:
    """(index, entry) for every entry that is an object with all required keys; the rest become problems."""
    for i, e in enumerate(items):
        if not isinstance(e, dict):
            problems.add(f"{ann_path}: {kind}[{i}]: expected an object")
            continue
        missing = [k for k in required if k not in e]
        if missing:
            ident = f" ({_SINGULAR[kind]} id {e['id']})" if "id" in e else ""
            keys = ", ".join(f"'{k}'" for k in missing)
            problems.add(f"{ann_path}: {kind}[{i}]{ident}: missing required key {keys}")
            continue
        yield i, e


def _rejected_ids(items: list, accepted: Iterable) -> set:
    """Ids of entries already reported as malformed: what refers to them is not reported again."""
    ids = {e.get("id") for e in items if isinstance(e, dict) and _is_int(e.get("id"))}
    return ids - set(accepted)


def _parse_categories(categories: list, ann_path: Path, problems: _Problems) -> dict[int, str]:
    class_map: dict[int, str] = {}
    names: dict[str, int] = {}
    for i, c in _entries(categories, "categories", ("id", "name"), ann_path, problems):
        cid, name = c["id"], c["name"]
        if not _is_int(cid) or not isinstance(name, str) or not name:
            problems.add(f"{ann_path}: categories[{i}]: 'id' must be an integer and 'name' a non-empty string")
        elif cid in class_map:
            problems.add(f"{ann_path}: categories[{i}] (category id {cid}): duplicate category id {cid}")
        elif name in names:  # stats count per class name, so names must be unique too
            problems.add(f"{ann_path}: categories[{i}] (category id {cid}): duplicate category name {name!r} "
                         f"(also category id {names[name]})")
        else:
            class_map[cid] = name
            names[name] = cid
    return dict(sorted(class_map.items()))


def _normalize_file_name(name: str) -> str | None:
    """The posix relpath under data/raw ('./a//b.png' → 'a/b.png'), or None if it is absolute or climbs out
    with `..`. Plain string work, not pathlib: this runs once per image."""
    drive = len(name) > 1 and name[1] == ":" and name[0].isalpha()  # C:\... or C:foo on Windows
    if not name or name[0] in "/\\" or drive or ".." in name.replace("\\", "/").split("/"):
        return None
    rel = "/".join(part for part in name.split("/") if part not in ("", "."))
    return rel or None


def _parse_images(images: list, ann_path: Path, problems: _Problems) -> dict[int, dict]:
    """image id → {id, path, width, height, attributes} for every well-formed, unique image entry."""
    by_id: dict[int, dict] = {}
    by_path: dict[str, int] = {}
    for i, e in _entries(images, "images", ("id", "file_name", "width", "height"), ann_path, problems):
        iid, name = e["id"], e["file_name"]
        where = f"{ann_path}: images[{i}] (image id {iid})"
        if not _is_int(iid):
            problems.add(f"{ann_path}: images[{i}]: 'id' must be an integer, got {iid!r}")
            continue
        if iid in by_id:
            problems.add(f"{where}: duplicate image id {iid}")
            continue
        bad_dims = [k for k in ("width", "height") if not _is_int(e[k]) or e[k] <= 0]
        if bad_dims:
            problems.add(f"{where}: '{bad_dims[0]}' must be a positive integer, got {e[bad_dims[0]]!r}")
            continue
        if not isinstance(name, str):
            problems.add(f"{where}: 'file_name' must be a string, got {name!r}")
            continue
        path = _normalize_file_name(name)
        if path is None:
            problems.add(f"{where}: file_name {name!r} escapes {RAW_DIR} (absolute path or '..')")
            continue
        if path in by_path:
            problems.add(f"{where}: duplicate file_name {name!r} (also image id {by_path[path]})")
            continue
        attributes = {k: v for k, v in e.items() if k not in STANDARD_IMAGE_KEYS | LABEL_IMAGE_KEYS}
        by_id[iid] = {"id": iid, "path": path, "width": e["width"], "height": e["height"], "attributes": attributes,
                      "mask_file": e.get("mask_file", _MISSING)}
        by_path[path] = iid
    return by_id


def _box_problem(bbox: Any, width: int, height: int) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"'bbox' must be a list of 4 finite numbers [x, y, w, h], got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"'bbox' {bbox} has a non-positive width or height"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"'bbox' {bbox} lies outside the image ({width}x{height})"
    return None


def _canonical_number(v: float) -> int | float:
    """10.0 → 10, so re-saving the JSON with another serializer does not change the labels hash."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _checked_annotations(
    annotations: list,
    required: tuple[str, ...],
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: _Problems,
    rejected: set,
) -> Iterator[tuple[str, dict, dict]]:
    """(where, annotation, its image) for each annotation whose id, image and category check out.

    `rejected` holds image and category ids already reported as malformed: an
    annotation pointing at one is skipped rather than reported as a second problem.
    """
    seen: set[int] = set()
    for i, a in _entries(annotations, "annotations", required, ann_path, problems):
        aid = a["id"]
        where = f"{ann_path}: annotations[{i}] (annotation id {aid})"
        if not _is_int(aid):
            problems.add(f"{ann_path}: annotations[{i}]: 'id' must be an integer, got {aid!r}")
            continue
        if aid in seen:
            problems.add(f"{where}: duplicate annotation id {aid}")
            continue
        seen.add(aid)
        if (a["image_id"], "image") in rejected or (a["category_id"], "category") in rejected:
            continue
        image = images.get(a["image_id"]) if _is_int(a["image_id"]) else None
        if image is None:
            problems.add(f"{where}: 'image_id' {a['image_id']!r} is not an image in 'images'")
            continue
        if not _is_int(a["category_id"]) or a["category_id"] not in class_map:
            problems.add(f"{where}, image id {image['id']}: 'category_id' {a['category_id']!r} is not in 'categories'")
            continue
        yield where, a, image


def _parse_annotations(
    annotations: list,
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: _Problems,
    rejected: set,
) -> dict[int, list[dict]]:
    """image id → its reduced annotations [{id, category_id, bbox, iscrowd}] sorted by id."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    required = ("id", "image_id", "category_id", "bbox")
    for where, a, image in _checked_annotations(annotations, required, images, class_map, ann_path, problems, rejected):
        iscrowd = a.get("iscrowd", 0)
        if not _is_int(iscrowd) or iscrowd not in (0, 1):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        box_problem = _box_problem(a["bbox"], image["width"], image["height"])
        if box_problem:
            problems.add(f"{where}, image id {image['id']} ({image['path']}): {box_problem}")
            continue
        bbox = [_canonical_number(v) for v in a["bbox"]]
        by_image[image["id"]].append({"id": a["id"], "category_id": a["category_id"], "bbox": bbox, "iscrowd": iscrowd})
    for anns in by_image.values():
        anns.sort(key=lambda a: a["id"])
    return by_image


def _parse_classification(
    annotations: list,
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: _Problems,
    rejected: set,
) -> dict[int, list[dict]]:
    """image id → [{id, category_id}]: exactly one image-level label per image (no bbox needed)."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    required = ("id", "image_id", "category_id")
    for _, a, image in _checked_annotations(annotations, required, images, class_map, ann_path, problems, rejected):
        by_image[image["id"]].append({"id": a["id"], "category_id": a["category_id"]})
    for iid in sorted(images):
        labels = by_image.get(iid, [])
        if len(labels) != 1:
            ids = ", ".join(str(a["id"]) for a in labels) or "none"
            problems.add(f"{ann_path}: image id {iid} ({images[iid]['path']}): a classification image needs exactly "
                         f"one label in 'annotations', found {len(labels)} (annotation ids: {ids})")
    return by_image


# --------------------------------------------------------------------------- segmentation masks


def mask_labels_hash(mask: Any) -> str:
    """The segmentation label hash: sha256 of the decoded pixels (uint8, row-major), so re-encoding
    a PNG is not a label change."""
    import numpy as np

    return sha256_bytes(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())


def read_mask(path: Path) -> Any:
    """A mask PNG as a uint8 HxW array of class ids; CvreproError naming the file if it is not one."""
    import numpy as np

    try:
        with Image.open(path) as im:
            if im.mode not in MASK_MODES:
                raise CvreproError(f"{path}: mask must be a single-channel 8-bit PNG (mode L or P), got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise CvreproError(f"{path}: mask file not found") from None
    except CvreproError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise CvreproError(f"{path}: unreadable or truncated mask ({type(e).__name__}: {e})") from None


def _check_masks(files: list[dict], labels_dir: Path, ann_path: Path, class_map: dict[int, str],
                 ignore_index: int, problems: _Problems) -> None:
    """Read every image's mask: present, inside data/labels, 8-bit, the image's size, known values.

    Sets f["mask_file"], f["labels_hash"] and f["pixels"] (class id → pixel count) on the good ones."""
    import numpy as np

    allowed = set(class_map) | {0, ignore_index}
    containment = _Containment(labels_dir)
    for f in files:
        if problems.full:
            return
        where = f"{ann_path}: image id {f['id']} ({f['path']})"
        name = f["mask_file"]
        if name is _MISSING:
            problems.add(f"{where}: missing 'mask_file' (segmentation needs a mask per image)")
            continue
        rel = _normalize_file_name(name) if isinstance(name, str) else None
        if rel is None:
            problems.add(f"{where}: 'mask_file' {name!r} must be a path inside {labels_dir}")
            continue
        if not containment.inside(rel):
            problems.add(f"{where}: 'mask_file' {name!r} resolves outside {labels_dir} (symlink)")
            continue
        path = labels_dir / rel
        try:
            mask = read_mask(path)
        except CvreproError as e:
            problems.add(f"{e} (mask_file of image id {f['id']} in {ann_path})")
            continue
        if mask.shape != (f["height"], f["width"]):
            problems.add(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but image id {f['id']} ({f['path']}) "
                         f"is {f['width']}x{f['height']}")
            continue
        values, counts = np.unique(mask, return_counts=True)
        unknown = sorted(int(v) for v in values if int(v) not in allowed)
        if unknown:
            problems.add(f"{path}: mask of image id {f['id']} holds values {unknown} that are neither a category id "
                         f"in {ann_path} nor 0 (background) or {ignore_index} (ignore)")
            continue
        f["mask_file"] = rel
        f["labels_hash"] = mask_labels_hash(mask)
        f["pixels"] = {int(v): int(c) for v, c in zip(values, counts)}


# --------------------------------------------------------------------------- files on disk


class _Containment:
    """Does a path under raw_dir stay inside it once symlinks are resolved?

    Resolving every image path costs one lstat per path component; datasets keep
    many images per folder, so resolve each folder once and lstat only the file.
    """

    def __init__(self, raw_dir: Path):
        self.raw_dir = raw_dir
        self.prefix = os.path.realpath(raw_dir) + os.sep
        self.folders: dict[str, str] = {}

    def inside(self, rel: str) -> bool:
        path = os.path.join(self.raw_dir, rel)
        folder, name = os.path.split(path)
        if folder not in self.folders:
            self.folders[folder] = os.path.realpath(folder)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(self.folders[folder], name)
        return real.startswith(self.prefix)


def _usable_listing(raw_dir: Path, listing: dict[str, str] | None) -> dict[str, str]:
    """The DVC listing if it lists exactly the files on disk, else {} (stale: hash everything ourselves)."""
    if not listing:
        return {}
    return listing if set(listing) == _files_on_disk(raw_dir) else {}


def _check_files(
    raw_dir: Path, ann_path: Path, images: dict[int, dict], listing: dict[str, str], workers: int, problems: _Problems
) -> list[dict]:
    """Open every image once: exists, inside data/raw, decodes, size as declared. Returns the manifest entries."""
    containment = _Containment(raw_dir)
    todo: list[dict] = []
    for image in sorted(images.values(), key=lambda im: im["path"]):
        image["abs"] = os.path.join(raw_dir, image["path"])
        if containment.inside(image["path"]):
            todo.append(image)
        else:
            problems.add(f"{image['abs']}: image id {image['id']} ('file_name' in {ann_path}): "
                         f"resolves outside {raw_dir} (symlink)")
    jobs = [(im["abs"], im["path"] not in listing) for im in todo]
    with contextlib.closing(_inspect_all(jobs, workers)) as inspected:  # closing shuts the pool if we stop early
        return _collect(todo, inspected, listing, ann_path, problems)


def _collect(
    todo: list[dict], inspected: Iterator[tuple], listing: dict[str, str], ann_path: Path, problems: _Problems
) -> list[dict]:
    """Turn inspection results into manifest entries; stop reading once the problem list is full."""
    files = []
    for image, (error, size, md5, dims) in zip(todo, inspected):
        where = f"{image['abs']}: image id {image['id']} ('file_name' in {ann_path})"
        if error is None and dims != (image["width"], image["height"]):
            error = f"declared 'width'/'height' {image['width']}x{image['height']} but the file is {dims[0]}x{dims[1]}"
        if error:
            problems.add(f"{where}: {error}")
            if problems.full:
                break  # enough to act on; don't spend minutes reading the rest
            continue
        files.append({**image, "md5": md5 or listing[image["path"]], "size": size})
    return files


# --------------------------------------------------------------------------- manifest


def _attribute_key(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _stats(files: list[dict], class_map: dict[int, str], task: str = "detection", ignore_index: int = 255) -> dict:
    """Counts per task. detection: boxes per class; classification: images per class;
    segmentation: images containing each class (per_class) and pixels per class (pixels_per_class)."""
    per_class = Counter({name: 0 for name in class_map.values()})
    attributes: dict[str, Counter] = defaultdict(Counter)
    for f in files:
        per_class.update(class_map[a["category_id"]] for a in f["annotations"])
        for key, value in f["attributes"].items():
            attributes[key][_attribute_key(value)] += 1
    stats = {
        "images": len(files),
        "objects": sum(len(f["annotations"]) for f in files),
        "per_class": dict(per_class),
        "attributes": {k: dict(v) for k, v in attributes.items()},
        "images_without_objects": sum(1 for f in files if not f["annotations"]),
    }
    if task == "segmentation":
        names = {0: "background", **class_map, ignore_index: "ignore"}
        pixels = Counter({name: 0 for name in names.values()})
        for f in files:
            pixels.update({names[k]: v for k, v in f["pixels"].items()})
        stats["pixels_per_class"] = dict(pixels)
    return stats


def _snapshot_id(task: str, class_map: dict[str, str], files: list[dict]) -> str:
    """Hash of the content only (paths, bytes, labels, class map): notes, sizes and stats are derived or free text."""
    keys = ("path", "md5", "labels_hash", "image_id", "attributes", "width", "height")
    content = {
        "schema": SCHEMA,
        "task": task,
        "class_map": class_map,
        "files": [{k: f[k] for k in keys} for f in files],
    }
    return "sha256:" + sha256_bytes(canonical_json(content).encode("utf-8"))


def _file_entry(f: dict, annotations: list[dict], task: str = "detection") -> dict:
    if task == "segmentation":
        return {**_file_entry(f, annotations), "labels_hash": f["labels_hash"], "mask_file": f["mask_file"]}
    if task == "classification":
        (label,) = annotations
        return {**_file_entry(f, annotations), "category_id": label["category_id"],
                "labels_hash": sha256_bytes(canonical_json(label).encode("utf-8"))}
    return {
        "path": f["path"],
        "image_id": f["id"],
        "md5": f["md5"],
        "size": f["size"],
        "width": f["width"],
        "height": f["height"],
        "attributes": f["attributes"],
        "labels_hash": sha256_bytes(canonical_json(annotations).encode("utf-8")),
        "objects": len(annotations),
    }


def build_manifest(
    raw_dir: Path,
    annotations_path: Path,
    notes: str = "",
    task: str = "detection",
    dvc_listing: dict[str, str] | None = None,
    workers: int | None = None,
    ignore_index: int = 255,
) -> dict:
    """Check images and labels; return the manifest. Raises CvreproError listing the problems found.

    dvc_listing (relpath → md5, see `dvc_listing()`) is trusted only if it lists
    exactly the files under raw_dir; otherwise every file is hashed here.
    workers: processes reading images (default: 2 if at least 3 CPUs, else 1).
    """
    raw_dir, ann_path = Path(raw_dir), Path(annotations_path)
    if task not in TASKS:
        supported = ", ".join(TASKS)
        raise CvreproError(f"params.yaml: task '{task}' is not supported by snapshot (supported: {supported})")
    if not raw_dir.is_dir():
        raise CvreproError(f"{raw_dir}: image directory not found")

    # Labels first (cheap), then every image on disk (the slow part), unless labels already gave MAX_PROBLEMS.
    problems = _Problems()
    images_raw, annotations_raw, categories_raw = _load_coco(ann_path, problems, task)
    class_map = _parse_categories(categories_raw, ann_path, problems)
    images = _parse_images(images_raw, ann_path, problems)
    rejected = {(i, "image") for i in _rejected_ids(images_raw, images)}
    rejected |= {(i, "category") for i in _rejected_ids(categories_raw, class_map)}
    if task == "detection":
        by_image = _parse_annotations(annotations_raw, images, class_map, ann_path, problems, rejected)
    elif task == "classification":
        by_image = _parse_classification(annotations_raw, images, class_map, ann_path, problems, rejected)
    else:
        by_image = {}  # segmentation: the mask is the label; boxes in the same file are not used
    files: list[dict] = []
    if not problems.full:
        listing = _usable_listing(raw_dir, dvc_listing)
        files = _check_files(raw_dir, ann_path, images, listing, workers or _default_workers(), problems)
    if task == "segmentation" and not problems.full:
        _check_masks(files, ann_path.parent, ann_path, class_map, ignore_index, problems)
    problems.raise_if_any()

    for f in files:
        if task == "segmentation":  # one "object" per class present, so per_class counts images holding it
            f["annotations"] = [{"category_id": k} for k in sorted(f["pixels"]) if k in class_map]
        else:
            f["annotations"] = by_image.get(f["id"], [])
    class_map_json = {str(k): v for k, v in class_map.items()}
    entries = [_file_entry(f, f["annotations"], task) for f in files]
    return {
        "schema": SCHEMA,
        "task": task,
        "snapshot_id": _snapshot_id(task, class_map_json, entries),
        "class_map": class_map_json,
        "files": entries,
        "stats": _stats(files, class_map, task, ignore_index),
        "notes": notes,
    }


def task_of(params: dict) -> str:
    """params.yaml keeps `task` top-level (detection, segmentation or classification)."""
    return params.get("task") or (params.get("dataset") or {}).get("task") or "detection"


def annotations_file(params: dict) -> Path:
    """The index file under data/labels named by `dataset.annotations` (default annotations.json)."""
    name = (params.get("dataset") or {}).get("annotations") or ANNOTATIONS.name
    rel = _normalize_file_name(str(name))
    if rel is None:
        raise CvreproError(f"params.yaml: dataset.annotations {name!r} must be a file name inside {ANNOTATIONS.parent}")
    return ANNOTATIONS.parent / rel


def ignore_index_of(params: dict) -> int:
    value = (params.get("dataset") or {}).get("ignore_index", 255)
    if not _is_int(value) or not 0 < value <= 255:
        raise CvreproError(f"params.yaml: dataset.ignore_index must be an integer in 1..255, got {value!r}")
    return value


def run(params: dict, root: Path = Path(".")) -> dict:
    """The DVC stage: build the manifest from data/raw + data/labels and write it atomically.

    Reads params["task"] and params["dataset"]["notes"]; raises CvreproError (nothing written) on a bad dataset.
    """
    root = Path(root)
    dataset = params.get("dataset") or {}
    manifest = build_manifest(
        root / RAW_DIR,
        root / annotations_file(params),
        notes=dataset.get("notes", "") or "",
        task=task_of(params),
        dvc_listing=dvc_listing(root),
        ignore_index=ignore_index_of(params),
    )
    write_json(root / MANIFEST, manifest)
    return manifest
