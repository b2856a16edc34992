"""The dataset manifest (`data/snapshot/manifest.json`): every image's path, content hash,
size and labels hash, the class map and dataset statistics, and a `snapshot_id` derived
from that content alone: same data and labels, same id.

`build_manifest` checks the labels index (dataset.index plus the task's own labels) and
opens every image once; nothing is returned unless the whole dataset checks out. Problems
are collected (up to MAX_PROBLEMS) and raised together as one CvreproError.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from cvrepro.core.fileio import CvreproError, canonical_json, sha256_bytes
from cvrepro.core.problems import Problems
from cvrepro.core.relpaths import Containment
from cvrepro.dataset.images import default_workers, inspect_all
from cvrepro.dataset.index import BoxCheck, load_coco, parse_categories, parse_images, rejected_ids
from cvrepro.dataset.listing import CheckCache, usable_listing

if TYPE_CHECKING:
    from cvrepro.tasks import Task

SCHEMA = "cvrepro.manifest/1"
MAX_PROBLEMS = 20


def _check_files(
    raw_dir: Path, ann_path: Path, images: dict[int, dict], listing: dict[str, str], workers: int, problems: Problems,
    cache: CheckCache,
) -> list[dict]:
    """Every image checked: exists, inside data/raw, decodes, size as declared. Images whose content hash
    passed before (`CheckCache`) are not opened again. Returns the manifest entries."""
    containment = Containment(raw_dir)
    raw = os.fspath(raw_dir)
    todo: list[dict] = []
    known: dict[int, tuple] = {}  # image id -> the cached inspection result
    for image in sorted(images.values(), key=lambda im: im["path"]):
        image["abs"] = os.path.join(raw, image["path"])
        try:  # one lstat serves the symlink check and, for a plain file, the cache lookup
            st = os.lstat(image["abs"])
        except OSError:
            st = None  # inspect_image says what is wrong
        link = st is not None and stat.S_ISLNK(st.st_mode)
        if not containment.inside(image["path"], is_link=link if st is not None else None):
            problems.add(f"{image['abs']}: image id {image['id']} ('file_name' in {ann_path}): "
                         f"resolves outside {raw_dir} (symlink)")
            continue
        todo.append(image)
        if link:
            try:
                st = os.stat(image["abs"])
            except OSError:
                continue
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        image["stat"] = (st.st_size, st.st_mtime_ns)
        hit = cache.lookup(image["path"], st, listing.get(image["path"]))
        if hit is not None:
            known[image["id"]] = (None, st.st_size, hit[0], hit[1])
    jobs = [(im["abs"], im["path"] not in listing) for im in todo if im["id"] not in known]
    with contextlib.closing(inspect_all(jobs, workers)) as inspected:  # closing shuts the pool if we stop early
        fresh = iter(inspected)
        results = (known[im["id"]] if im["id"] in known else next(fresh) for im in todo)
        files = _collect(todo, results, listing, ann_path, problems)
    for f in files:
        if "stat" in f and f["size"] == f["stat"][0]:  # stat taken before the read: an edit since shows next time
            cache.record(f["path"], f["md5"], f["size"], f["stat"][1], (f["width"], f["height"]))
    cache.save({f["path"] for f in files} | {im["path"] for im in todo if im["id"] in known})
    return files


def _collect(
    todo: list[dict], inspected: Iterator[tuple], listing: dict[str, str], ann_path: Path, problems: Problems
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


def _attribute_key(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def slice_values(manifest: dict, key: str | None) -> dict[int, str]:
    """image id -> its value of the slice attribute (images without it are in no slice)."""
    if not key:
        return {}
    return {f["image_id"]: str(f["attributes"][key]) for f in manifest["files"] if key in f.get("attributes", {})}


def _stats(files: list[dict], class_map: dict[int, str], task, ignore_index: int) -> dict:
    """Counts: objects per class (what an object is, the task says: a box, an image's label, a class present
    in a mask), images per attribute value, and the task's own (segmentation: pixels per class)."""
    per_class = Counter({name: 0 for name in class_map.values()})
    attributes: dict[str, Counter] = defaultdict(Counter)
    for f in files:
        per_class.update(class_map[a["category_id"]] for a in f["annotations"])
        for key, value in f["attributes"].items():
            attributes[key][_attribute_key(value)] += 1
    return {
        "images": len(files),
        "objects": sum(len(f["annotations"]) for f in files),
        "per_class": dict(per_class),
        "attributes": {k: dict(v) for k, v in attributes.items()},
        "images_without_objects": sum(1 for f in files if not f["annotations"]),
        **task.extra_stats(files, class_map, ignore_index),
    }


def _import_stats(info: dict) -> dict:
    """The boxes `cvrepro import --invalid drop|clip` left out or cut ({} for an index not imported)."""
    record = info.get("cvrepro_import")
    invalid = record.get("invalid") if isinstance(record, dict) else None
    return {"invalid_boxes": invalid} if isinstance(invalid, dict) else {}


def _snapshot_invalid(check: BoxCheck) -> dict:
    """The boxes `dataset.invalid` drop|clip left out or cut, each listed (nothing for `fail`: there are none)."""
    if check.mode == "fail":
        return {}
    return {"snapshot_invalid": {**check.counts(), "boxes": check.rows}}


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


def _file_entry(f: dict, task) -> dict:
    return {
        "path": f["path"],
        "image_id": f["id"],
        "md5": f["md5"],
        "size": f["size"],
        "width": f["width"],
        "height": f["height"],
        "attributes": f["attributes"],
        **task.label_entry(f, f["annotations"]),
    }


def build_manifest(
    raw_dir: Path,
    annotations_path: Path,
    notes: str = "",
    task: "str | Task" = "",
    dvc_listing: dict[str, str] | None = None,
    workers: int | None = None,
    ignore_index: int = 255,
    check_cache: Path | None = None,
    invalid: str = "fail",
) -> dict:
    """Check images and labels; return the manifest. Raises CvreproError listing the problems found.

    task: a registered task (or its name); it checks its own labels.
    dvc_listing (relpath → md5, see `dvc_listing()`) is trusted only if it lists
    exactly the files under raw_dir; otherwise every file is hashed here.
    workers: processes reading images (default: 2 if at least 3 CPUs, else 1).
    check_cache: a file where the results of image checks are kept between runs (`CheckCache`):
    an image whose content hash passed before is not opened again. None: check every image.
    invalid: `dataset.invalid`, what a zero-size or out-of-image box is: a problem (fail), or dropped or
    clipped, each listed in `stats.snapshot_invalid` (the labels file is not changed).
    """
    from cvrepro import tasks

    task = task if isinstance(task, tasks.Task) else tasks.get(task, "params.yaml: task")
    raw_dir, ann_path = Path(raw_dir), Path(annotations_path)
    if not raw_dir.is_dir():
        raise CvreproError(f"{raw_dir}: image directory not found")

    # Labels first (cheap), then every image on disk (the slow part), unless labels already gave MAX_PROBLEMS.
    problems = Problems()
    info: dict = {}
    images_raw, annotations_raw, categories_raw = load_coco(ann_path, problems, task.annotations_required, info)
    class_map = parse_categories(categories_raw, ann_path, problems)
    images = parse_images(images_raw, ann_path, problems)
    rejected = {(i, "image") for i in rejected_ids(images_raw, images)}
    rejected |= {(i, "category") for i in rejected_ids(categories_raw, class_map)}
    check = BoxCheck(invalid, "dataset.invalid")
    by_image = task.parse_labels(annotations_raw, images, class_map, ann_path, problems, rejected, check)
    files: list[dict] = []
    if not problems.full:
        listing = usable_listing(raw_dir, dvc_listing)
        files = _check_files(raw_dir, ann_path, images, listing, workers or default_workers(), problems,
                             CheckCache(check_cache))
    if not problems.full:
        task.check_labels_on_disk(files, ann_path.parent, ann_path, class_map, ignore_index, problems)
    problems.raise_if_any()
    if not files:
        raise CvreproError(f"{ann_path}: 0 images in 'images': an empty dataset cannot be snapshotted or "
                           "released; add images and their labels")

    for f in files:
        f["annotations"] = task.objects(f, by_image.get(f["id"], []), class_map)
    class_map_json = {str(k): v for k, v in class_map.items()}
    entries = [_file_entry(f, task) for f in files]
    return {
        "schema": SCHEMA,
        "task": task.name,
        "snapshot_id": _snapshot_id(task.name, class_map_json, entries),
        "class_map": class_map_json,
        "files": entries,
        "stats": {**_stats(files, class_map, task, ignore_index), **_import_stats(info), **_snapshot_invalid(check)},
        "notes": notes,
    }
