"""The dataset manifest (`data/snapshot/manifest.json`): every image's path, content hash,
size and labels hash, the class map and dataset statistics, and a `snapshot_id` derived
from that content alone: same data and labels, same id.

`build_manifest` checks the labels index (dataset.index plus the task's own labels) and
opens every image once; nothing is returned unless the whole dataset checks out. Problems
are collected (up to MAX_PROBLEMS) and raised together as one CvreproError.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from cvrepro.config.params import IGNORE_INDEX
from cvrepro.core.fileio import CvreproError, canonical_json, json_text, read_bytes
from cvrepro.core.problems import Problems
from cvrepro.core.relpaths import Containment
from cvrepro.dataset.fingerprint import fingerprint
from cvrepro.dataset.images import default_workers, inspect_all
from cvrepro.dataset.index import BoxCheck, attributes_of, load_coco, parse_categories, parse_images, rejected_ids
from cvrepro.dataset.labelcache import LabelCache, labels_key
from cvrepro.dataset.listing import CheckCache, usable_listing

SCHEMA = "cvrepro.manifest/1"
LABELS_CACHE = "snapshot-labels.json"  # beside the image check cache: the label side of the last snapshot
MAX_PROBLEMS = 20


def _check_files(
    raw_dir: Path, ann_path: Path, images: Iterable[dict], listing: dict[str, str], workers: int, problems: Problems,
    cache: CheckCache, id_key: str = "id",
) -> list[dict]:
    """Every image checked: exists, inside data/raw, decodes, size as declared. Images whose content hash
    passed before (`CheckCache`) are not opened again. `images`: dicts with `path`, `width`, `height` and the
    image id under `id_key`. Returns those that passed, sorted by path, with their `md5` and `size` (bytes) set."""
    containment = Containment(raw_dir)
    raw = os.path.join(os.fspath(raw_dir), "")  # with its separator: a path is raw + relpath (no join per image)
    todo: list[dict] = []
    known: dict[str, tuple] = {}  # relpath -> the cached inspection result
    for image in sorted(images, key=lambda im: im["path"]):
        path = raw + image["path"]
        try:  # one lstat serves the symlink check and, for a plain file, the cache lookup
            st = os.lstat(path)
        except OSError:
            st = None  # inspect_image says what is wrong
        link = st is not None and stat.S_ISLNK(st.st_mode)
        if not containment.inside(image["path"], is_link=link if st is not None else None):
            problems.add(f"{path}: image id {image[id_key]} ('file_name' in {ann_path}): "
                         f"resolves outside {raw_dir} (symlink)")
            continue
        todo.append(image)
        if link:
            try:
                st = os.stat(path)
            except OSError:
                continue
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        dims = (image["width"], image["height"])
        md5 = cache.lookup(image["path"], st, listing.get(image["path"]), dims)
        if md5 is not None:
            known[image["path"]] = (None, st.st_size, md5, dims, None)  # no mtime: nothing new to record
    jobs = ((raw + im["path"], im["path"] not in listing) for im in todo if im["path"] not in known)
    with contextlib.closing(inspect_all(jobs, len(todo) - len(known), workers)) as inspected:  # closing shuts
        fresh = iter(inspected)  # the pool if we stop early
        results = (known[im["path"]] if im["path"] in known else next(fresh) for im in todo)
        files = _collect(raw, todo, results, listing, ann_path, problems, id_key, cache)
    if problems.full:  # stopped early: keep what earlier runs learnt about the images not reached
        passed = {f["path"] for f in files}
        cache.save([im["path"] for im in todo if im["path"] in passed or im["path"] in known])
    else:
        cache.save([f["path"] for f in files])
    return files


def _collect(
    raw: str, todo: list[dict], inspected: Iterator[tuple], listing: dict[str, str], ann_path: Path,
    problems: Problems, id_key: str, cache: CheckCache,
) -> list[dict]:
    """Add md5 and size to each image that passed and record it in the cache; stop reading once the problem list
    is full."""
    files = []
    for image, (error, size, md5, dims, mtime_ns) in zip(todo, inspected):
        if error is None and dims != (image["width"], image["height"]):
            error = f"declared 'width'/'height' {image['width']}x{image['height']} but the file is {dims[0]}x{dims[1]}"
        if error:
            problems.add(f"{raw}{image['path']}: image id {image[id_key]} ('file_name' in {ann_path}): "
                         f"{error}")
            if problems.full:
                break  # enough to act on; don't spend minutes reading the rest
            continue
        image["md5"], image["size"] = md5 or listing[image["path"]], size
        if mtime_ns is not None:
            cache.record(image["path"], image["md5"], size, mtime_ns, dims)
        files.append(image)
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
        for key, value in attributes_of(f).items():
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
    """The boxes `cvrepro import --invalid drop|clip` left out or cut, and the files `--bad-files` /
    `--unlabelled` dropped or kept as negatives ({} for an index not imported). Stats only: not in snapshot_id."""
    record = info.get("cvrepro_import")
    record = record if isinstance(record, dict) else {}
    found = {"invalid_boxes": record.get("invalid"), "bad_files": record.get("bad_files")}
    return {k: v for k, v in found.items() if isinstance(v, dict)}


def _snapshot_invalid(check: BoxCheck) -> dict:
    """The boxes `dataset.invalid` drop|clip left out or cut, each listed (nothing for `fail`: there are none)."""
    if check.mode == "fail":
        return {}
    return {"snapshot_invalid": {**check.counts(), "boxes": check.rows}}


ID_KEYS = ("path", "md5", "labels_hash", "image_id", "attributes", "width", "height")


def _snapshot_id(task: str, class_map: dict[str, str], files: list[dict], chunk: int = 1000) -> str:
    """Hash of the content only (paths, bytes, labels, class map): notes, sizes and stats are derived or free text.

    The bytes hashed are `canonical_json({"class_map", "files": [each file's ID_KEYS], "schema", "task"})`, fed
    to the hash `chunk` files at a time so that the whole text (~300 bytes an image) is never in memory."""
    h = hashlib.sha256(f'{{"class_map":{canonical_json(class_map)},"files":['.encode("utf-8"))
    for start in range(0, len(files), chunk):
        part = canonical_json([{k: f[k] for k in ID_KEYS} for f in files[start:start + chunk]])
        h.update(("," if start else "").encode("utf-8") + part[1:-1].encode("utf-8"))
    h.update(f'],"schema":{canonical_json(SCHEMA)},"task":{canonical_json(task)}}}'.encode("utf-8"))
    return "sha256:" + h.hexdigest()


def _file_entry(f: dict, task) -> dict:
    return {
        "path": f["path"],
        "image_id": f["id"],
        "md5": f["md5"],
        "size": f["size"],
        "width": f["width"],
        "height": f["height"],
        "attributes": attributes_of(f),
        **task.label_entry(f, f["annotations"]),
    }


def build_manifest(
    raw_dir: Path,
    annotations_path: Path,
    notes: str = "",
    *,
    task,
    dvc_listing: dict[str, str] | None = None,
    workers: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    check_cache: Path | None = None,
    invalid: str = "fail",
) -> dict:
    """Check images and labels; return the manifest. Raises CvreproError listing the problems found.

    task: the dataset's task (a `cvrepro.tasks.Task`, which the caller chose: `tasks.of_params`); it checks
    its own labels.
    dvc_listing (relpath → md5, see `dvc_listing()`) is trusted only if it lists
    exactly the files under raw_dir; otherwise every file is hashed here.
    workers: processes reading images (default: 2 if at least 3 CPUs, else 1).
    check_cache: a file where the results of image checks are kept between runs (`CheckCache`):
    an image whose content hash passed before is not opened again. None: check every image.
    invalid: `dataset.invalid`, what a zero-size or out-of-image box is: a problem (fail), or dropped or
    clipped, each listed in `stats.snapshot_invalid` (the labels file is not changed).
    """
    if isinstance(task, str):  # a caller written before tasks were passed down: say what changed
        raise TypeError(f"build_manifest: task must be a cvrepro.tasks.Task (tasks.get({task!r})), not its name")
    raw_dir, ann_path = Path(raw_dir), Path(annotations_path)
    if not raw_dir.is_dir():
        raise CvreproError(f"{raw_dir}: image directory not found")
    index_bytes = read_bytes(ann_path)
    labels_cache = LabelCache(Path(check_cache).with_name(LABELS_CACHE) if check_cache else None,
                              labels_key(index_bytes, task, invalid, ignore_index))
    checks = CheckCache(check_cache)
    known = labels_cache.load()
    if known is not None:
        del index_bytes
        manifest = _with_known_labels(known, raw_dir, ann_path, usable_listing(raw_dir, dvc_listing),
                                      workers or default_workers(), checks)
        return {**manifest, "notes": notes}

    # Labels first (cheap), then every image on disk (the slow part), unless labels already gave MAX_PROBLEMS.
    problems = Problems()
    info: dict = {}
    index_text = json_text(ann_path, index_bytes)
    del index_bytes
    images_raw, annotations_raw, categories_raw = load_coco(ann_path, index_text, problems, task.annotations_required,
                                                            info)
    del index_text
    class_map = parse_categories(categories_raw, ann_path, problems)
    images = parse_images(images_raw, ann_path, problems)
    rejected = {(i, "image") for i in rejected_ids(images_raw, images)}
    rejected |= {(i, "category") for i in rejected_ids(categories_raw, class_map)}
    check = BoxCheck(invalid, "dataset.invalid")
    by_image = task.parse_labels(annotations_raw, images, class_map, ann_path, problems, rejected, check)
    del images_raw, annotations_raw, categories_raw  # ~1 KB an image: parsed, the raw index is not needed
    files: list[dict] = []
    if not problems.full:
        files = _check_files(raw_dir, ann_path, images.values(), usable_listing(raw_dir, dvc_listing),
                             workers or default_workers(), problems, checks)
    del images, dvc_listing, checks
    if not problems.full:
        task.check_labels_on_disk(files, ann_path.parent, ann_path, class_map, ignore_index, problems)
    problems.raise_if_any()
    if not files:
        raise CvreproError(f"{ann_path}: 0 images in 'images': an empty dataset cannot be snapshotted or "
                           "released; add images and their labels")

    for f in files:
        f["annotations"] = task.objects(f, by_image.pop(f["id"], []), class_map)
    stats = {**_stats(files, class_map, task, ignore_index), **_import_stats(info), **_snapshot_invalid(check)}
    sizes = fingerprint(files, class_map, task)  # derived, like stats: outside what snapshot_id hashes
    for i, f in enumerate(files):  # in place: an image's parsed labels are freed as its entry is made
        files[i] = _file_entry(f, task)
    class_map_json = {str(k): v for k, v in class_map.items()}
    manifest = {
        "schema": SCHEMA,
        "task": task.name,
        "snapshot_id": _snapshot_id(task.name, class_map_json, files),
        "class_map": class_map_json,
        "files": files,
        "stats": stats,
        "fingerprint": sizes,
        "notes": notes,
    }
    labels_cache.save(manifest)
    return manifest


def _with_known_labels(known: dict, raw_dir: Path, ann_path: Path, listing: dict[str, str], workers: int,
                       checks: CheckCache) -> dict:
    """The manifest from the label side of an earlier one (`LabelCache`): every image is checked again (its
    entry gets the md5 and size found now) and the snapshot id computed afresh."""
    problems = Problems()
    _check_files(raw_dir, ann_path, known["files"], listing, workers, problems, checks, id_key="image_id")
    problems.raise_if_any()
    known["snapshot_id"] = _snapshot_id(known["task"], known["class_map"], known["files"])
    return known
