"""The labels index (docs/label-formats.md): a COCO-shaped JSON file under data/labels with
`images`, `categories` and, per task, `annotations`. This module checks the parts every
task shares (categories, images, the ids and references of annotations, boxes) and names
each problem by file and id or field; the task modules check their own labels on top.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator

from cvrepro.config.params import INVALID_MODES  # also imported from here
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import CvreproError, parse_json
from cvrepro.core.paths import ANNOTATIONS, RAW_DIR
from cvrepro.core.problems import Problems, is_int, is_number
from cvrepro.core.relpaths import normalize_relpath

BOX_TOLERANCE = 0.5  # px: annotation tools round box edges; half a pixel over the border is not an error
BOX_DIGITS = 6  # pixel boxes converted from normalised or 1-based coordinates are rounded to 1e-6 px


# Keys the COCO format defines for an image; every other key is a user attribute.
STANDARD_IMAGE_KEYS = {"id", "file_name", "width", "height", "license", "flickr_url", "coco_url", "date_captured"}


LABEL_IMAGE_KEYS = {"mask_file"}  # labels kept on the image entry (segmentation): not attributes either


MISSING = object()  # an image entry without a mask_file key


def attributes_of(image: dict) -> dict:
    """A parsed image's user attributes ({} when it has none)."""
    return image.get("attributes") or {}


def load_coco(ann_path: Path, text: str, problems: Problems, annotations_required: bool = True,
              info: dict | None = None) -> tuple[list, list, list]:
    """(images, annotations, categories) of the index; `annotations_required` False lets a task whose labels
    live elsewhere (segmentation: a mask per image) omit the key. `info`, if given, receives the index's
    COCO `info` object (where `cvrepro import` records what it did). `text`: the file's text (`json_text`)."""
    coco = parse_json(ann_path, text)  # CvreproError naming the file
    if not isinstance(coco, dict):
        raise CvreproError(f"{ann_path}: expected a JSON object with images, annotations and categories")
    if info is not None and isinstance(coco.get("info"), dict):
        info.update(coco["info"])
    lists = []
    for key in ("images", "annotations", "categories"):
        if key == "annotations" and not annotations_required and key not in coco:
            lists.append([])
            continue
        if not isinstance(coco.get(key), list):
            what = "missing required key" if key not in coco else "expected a list for key"
            problems.add(f"{ann_path}: {what} '{key}'")
        lists.append(coco.get(key) if isinstance(coco.get(key), list) else [])
    problems.raise_if_any()  # nothing further makes sense without the three lists
    return lists[0], lists[1], lists[2]


_SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}


def entries(items: list, kind: str, required: Iterable[str], ann_path: Path, problems: Problems) -> Iterator:
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


def rejected_ids(items: list, accepted: Iterable) -> set:
    """Ids of entries already reported as malformed: what refers to them is not reported again."""
    ids = {e.get("id") for e in items if isinstance(e, dict) and is_int(e.get("id"))}
    return ids - set(accepted)


def parse_categories(categories: list, ann_path: Path, problems: Problems) -> dict[int, str]:
    class_map: dict[int, str] = {}
    names: dict[str, int] = {}
    for i, c in entries(categories, "categories", ("id", "name"), ann_path, problems):
        cid, name = c["id"], c["name"]
        if not is_int(cid) or not isinstance(name, str) or not name:
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


def parse_images(images: list, ann_path: Path, problems: Problems) -> dict[int, dict]:
    """image id → {id, path, width, height[, attributes][, mask_file]} for every well-formed, unique image entry
    (`attributes` only when the entry has any: read them with `attributes_of`; `mask_file` only when given)."""
    by_id: dict[int, dict] = {}
    by_path: dict[str, int] = {}
    first: dict[int, int] = {}  # image id -> index of its first entry, well-formed or not: a duplicate is named
    for i, e in entries(images, "images", ("id", "file_name", "width", "height"), ann_path, problems):
        iid, name = e["id"], e["file_name"]
        where = f"{ann_path}: images[{i}] (image id {iid})"
        if not is_int(iid):
            problems.add(f"{ann_path}: images[{i}]: 'id' must be an integer, got {iid!r}")
            continue
        if iid in first:
            problems.add(f"{where}: duplicate image id {iid} (also images[{first[iid]}])")
            by_id.pop(iid, None)  # neither entry is trusted: their annotations are not checked against one
            continue
        first[iid] = i
        bad_dims = [k for k in ("width", "height") if not is_int(e[k]) or e[k] <= 0]
        if bad_dims:
            problems.add(f"{where}: '{bad_dims[0]}' must be a positive integer, got {e[bad_dims[0]]!r}")
            continue
        if not isinstance(name, str):
            problems.add(f"{where}: 'file_name' must be a string, got {name!r}")
            continue
        path = normalize_relpath(name)
        if path is None:
            problems.add(f"{where}: file_name {name!r} escapes {RAW_DIR} (absolute path or '..')")
            continue
        if path in by_path:
            problems.add(f"{where}: duplicate file_name {name!r} (also image id {by_path[path]})")
            continue
        image = {"id": iid, "path": path, "width": e["width"], "height": e["height"]}
        # only what is there: at 100k images, each key more on every image was ~90 bytes an image at snapshot's peak
        if len(e) > 4:
            attributes = {k: v for k, v in e.items() if k not in STANDARD_IMAGE_KEYS | LABEL_IMAGE_KEYS}
            if attributes:
                image["attributes"] = attributes
            if "mask_file" in e:
                image["mask_file"] = e["mask_file"]
        by_id[iid] = image
        by_path[path] = iid
    return by_id


def box_outside(x: float, y: float, w: float, h: float, width: float, height: float) -> str | None:
    """Which edge of the box [x, y, w, h] (pixels) lies more than BOX_TOLERANCE outside a width x height
    image ('x', 'y', 'w' for the right edge, 'h' for the bottom), or None if it is inside."""
    t = BOX_TOLERANCE
    return "x" if x < -t else "y" if y < -t else "w" if x + w > width + t else "h" if y + h > height + t else None


def box_problem(bbox: Any, width: int, height: int) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        return f"'bbox' must be a list of 4 finite numbers [x, y, w, h], got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"'bbox' {bbox} has a non-positive width or height"
    if box_outside(x, y, w, h, width, height):
        return f"'bbox' {bbox} lies outside the image ({width}x{height})"
    return None


class BoxCheck:
    """What to do with a zero-size or out-of-image box: `cvrepro import --invalid`, and snapshot's
    `dataset.invalid` (which applies it when the index is read: the labels file stays as delivered).

    - `fail` (default): a CvreproError naming the file and the box, as snapshot would;
    - `drop`: the box is left out; `clip`: it is cut to the image, and dropped if nothing is left.
    Every box dropped or clipped becomes a report row (file, id, problem, before, after, action):
    nothing is dropped silently. Boxes overhanging the border by up to BOX_TOLERANCE are kept as they are.
    """

    def __init__(self, mode: str = "fail", option: str = "--invalid"):
        if mode not in INVALID_MODES:
            raise CvreproError(f"{option} {mode!r}: choose one of {', '.join(INVALID_MODES)}")
        self.mode, self.option = mode, option
        self.rows: list[dict] = []

    def __call__(self, bbox: list[float], width: int, height: int, file: str, ident: str) -> list | None:
        """The box to keep ([x, y, w, h]) or None to drop it."""
        x, y, w, h = bbox
        problem = None
        if not all(math.isfinite(v) for v in bbox):
            problem = "not finite"
        elif w <= 0 or h <= 0:
            problem = "zero or negative size"
        elif box_outside(x, y, w, h, width, height):
            problem = f"outside the {width}x{height} image"
        if problem is None:
            return bbox
        if self.mode == "fail":
            raise CvreproError(f"{file}: {ident}: box [x, y, w, h] {[tidy(v) for v in bbox]} is {problem} "
                               f"({self.option} drop or clip to keep the rest and report it)")
        after = None
        if self.mode == "clip" and problem != "not finite":
            x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x1 > x0 and y1 > y0:
                after = [tidy(x0), tidy(y0), tidy(x1 - x0), tidy(y1 - y0)]
        self.rows.append({"file": file, "id": ident, "problem": problem, "before": [tidy(v) for v in bbox],
                          "after": after, "action": "clipped" if after else "dropped"})
        return after

    def counts(self) -> dict:
        return {"mode": self.mode, "dropped": sum(r["action"] == "dropped" for r in self.rows),
                "clipped": sum(r["action"] == "clipped" for r in self.rows)}


def tidy(v: float) -> int | float:
    """Round away float noise from a conversion; 12.0 -> 12."""
    v = round(float(v), BOX_DIGITS)
    if not math.isfinite(v):
        return v
    return int(v) if v.is_integer() else v


def canonical_number(v: float) -> int | float:
    """10.0 → 10, so re-saving the JSON with another serializer does not change the labels hash."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def checked_annotations(
    annotations: list,
    required: tuple[str, ...],
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: Problems,
    rejected: set,
) -> Iterator[tuple[str, dict, dict]]:
    """(where, annotation, its image) for each annotation whose id, image and category check out.

    `rejected` holds image and category ids already reported as malformed: an
    annotation pointing at one is skipped rather than reported as a second problem.
    """
    seen: dict[int, int] = {}  # annotation id -> index of its first entry
    for i, a in entries(annotations, "annotations", required, ann_path, problems):
        aid = a["id"]
        where = f"{ann_path}: annotations[{i}] (annotation id {aid})"
        if not is_int(aid):
            problems.add(f"{ann_path}: annotations[{i}]: 'id' must be an integer, got {aid!r}")
            continue
        if aid in seen:
            problems.add(f"{where}: duplicate annotation id {aid} (also annotations[{seen[aid]}])")
            continue
        seen[aid] = i
        if (a["image_id"], "image") in rejected or (a["category_id"], "category") in rejected:
            continue
        image = images.get(a["image_id"]) if is_int(a["image_id"]) else None
        if image is None:
            problems.add(f"{where}: 'image_id' {a['image_id']!r} is not an image in 'images'")
            continue
        if not is_int(a["category_id"]) or a["category_id"] not in class_map:
            problems.add(f"{where}, image id {image['id']}: 'category_id' {a['category_id']!r} is not in 'categories'")
            continue
        yield where, a, image


def annotations_file(params: ParamsLike) -> Path:
    """The index file under data/labels for the task: `dataset.annotations_by_task[task]` (a dataset that serves
    several tasks from different files, as the demo does), else `dataset.annotations` (default annotations.json).
    A dataset option that names its `task` (what `cvrepro import` writes) refuses another task."""
    cfg = typed(params)
    return annotations_path(cfg.task, cfg.dataset.name, cfg.dataset.task, cfg.dataset.annotations_by_task,
                            cfg.dataset.annotations)


def annotations_path(task: str | None, dataset_name: str | None, dataset_task: str | None, by_task: dict,
                     annotations: str | None) -> Path:
    """`annotations_file` of these values: the config's, or those a params.yaml of another revision records
    (dataset/diff.py), which is read as written, not typed."""
    if dataset_task and task and dataset_task != task:
        raise CvreproError(f"params.yaml: task is {task!r} but the dataset {dataset_name!r} holds "
                           f"{dataset_task} labels (conf/dataset/{dataset_name}.yaml: task); select a "
                           f"{task} dataset with `dataset=<name>` or drop the task override")
    name = (by_task or {}).get(task) or annotations or ANNOTATIONS.name
    rel = normalize_relpath(str(name))
    if rel is None:
        raise CvreproError(f"params.yaml: dataset.annotations {name!r} must be a file name inside {ANNOTATIONS.parent}")
    return ANNOTATIONS.parent / rel

