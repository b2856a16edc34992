"""COCO-style detection metrics through the real pycocotools, made safe for a pipeline.

pycocotools prints progress to stdout, mutates the dicts it is given, asserts on empty
result lists and reports "no ground truth here" as -1. This wrapper silences the prints,
works on copies, handles zero detections, and reports undefined values as ``None``
(never -1), so means only ever cover classes that have ground truth in the evaluated images.
"""

from __future__ import annotations

import contextlib
import copy
import io as _stdio
import math
from collections import defaultdict
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cvrepro.core.fileio import CvreproError

# Indices into COCOeval.eval["precision"], shaped [T iou, R recall, K class, A area, M maxDets].
_IOU50, _IOU75 = 0, 5  # iouThrs = .50, .55, ..., .95
_AREA_ALL = 0  # areaRngLbl = all, small, medium, large
_MAXDET100 = 2  # maxDets = 1, 10, 100

N_RECALL_POINTS = 101  # COCO's recThrs: 0.00, 0.01, ..., 1.00


def _r(x: float | None) -> float | None:
    """COCO's -1 ("undefined") and NaN become None; everything else a 4-decimal float."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or x < 0:
        return None
    return round(x, 4)


def _mean_defined(a: np.ndarray) -> float | None:
    """Mean over the entries COCO filled in (it leaves -1 where a class has no ground truth)."""
    a = a[a > -1]
    return float(np.mean(a)) if a.size else None


def _gt_copy(gt: dict) -> dict:
    """A deep copy of the ground truth with the fields pycocotools needs filled in."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise CvreproError(f"ground truth is not a COCO detection dict: missing list '{key}'")
    gt = copy.deepcopy(gt)
    used_ids = {a["id"] for a in gt["annotations"] if "id" in a}
    next_id = max(used_ids, default=0) + 1
    for ann in gt["annotations"]:
        if "id" not in ann:  # createIndex keys annotations by id
            ann["id"] = next_id
            next_id += 1
        ann.setdefault("iscrowd", 0)  # computeIoU reads it for every gt box
        if "area" not in ann:  # area ranges (small/medium/large) filter on it
            _, _, w, h = ann["bbox"]
            ann["area"] = float(w) * float(h)
    return gt


def _dt_copy(detections: list[dict], img_set: set, cat_set: set) -> list[dict]:
    """Plain-python copies (loadRes adds keys in place and chokes on numpy scalars in JSON)."""
    out = []
    for i, d in enumerate(detections):
        try:
            image_id, category_id = d["image_id"], d["category_id"]
            x, y, w, h = (float(v) for v in d["bbox"])
            score = float(d["score"])
        except (KeyError, TypeError, ValueError) as e:
            raise CvreproError(
                f"detection {i}: expected image_id, category_id, bbox [x,y,w,h] and score ({e})"
            ) from None
        image_id = image_id.item() if isinstance(image_id, np.generic) else image_id
        category_id = category_id.item() if isinstance(category_id, np.generic) else category_id
        if image_id not in img_set:
            raise CvreproError(f"detection {i}: image_id {image_id!r} is not in the ground truth")
        if category_id not in cat_set:
            raise CvreproError(f"detection {i}: category_id {category_id!r} is not in the ground truth categories")
        out.append({"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score})
    return out


def _class_name(cat: dict, class_names: dict | None) -> str:
    if class_names:
        for key in (cat["id"], str(cat["id"])):  # JSON-loaded maps have string keys
            if key in class_names:
                return str(class_names[key])
    return str(cat.get("name", cat["id"]))


def _empty_result(coco_gt: COCO) -> COCO:
    """A results object with no detections: loadRes asserts on an empty list, so build it directly."""
    res = COCO()
    res.dataset = {
        "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    res.createIndex()
    return res


def coco_metrics(
    gt: dict,
    detections: list[dict],
    img_ids: list[int] | None = None,
    class_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Box AP/AR with pycocotools over `img_ids` (all images when None).

    Returns plain python types, floats rounded to 4 decimals:
    ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``/``APm``/``APl``, ``AR1``, ``AR10``, ``AR100``,
    ``n_images``, ``n_gt``, ``n_detections`` (inside the evaluated images),
    ``per_class``: {name: {"AP", "AP50", "AP75", "n_gt"}} for every category, and
    ``pr_curve``: {name: 101 precisions at IoU .50, area all, maxDets 100, over recall 0.00..1.00}
    for every category that has ground truth in the evaluated images.

    A value is None where COCO cannot define it (it would say -1): a class with no ground
    truth in these images, an area range with no objects, or no ground truth at all.
    Means are taken over the classes where it is defined. Zero detections give 0.0 wherever
    there is ground truth. Detections for images outside `img_ids` are ignored.
    """
    gt = _gt_copy(gt)
    all_img_ids = [img["id"] for img in gt["images"]]
    img_set = set(all_img_ids)
    cats = sorted(gt["categories"], key=lambda c: c["id"])  # COCOeval orders catIds sorted
    dts = _dt_copy(detections, img_set, {c["id"] for c in cats})

    if img_ids is None:
        eval_ids = sorted(img_set)
    else:
        eval_ids = sorted({i.item() if isinstance(i, np.generic) else i for i in img_ids})
        unknown = [i for i in eval_ids if i not in img_set]
        if unknown:
            raise CvreproError(f"img_ids not in the ground truth: {unknown[:10]}")

    names = [_class_name(c, class_names) for c in cats]
    if len(set(names)) != len(names):
        raise CvreproError(f"class names are not unique: {names}")

    eval_set = set(eval_ids)
    n_gt_per_cat: dict[Any, int] = defaultdict(int)
    for ann in gt["annotations"]:
        if ann["image_id"] in eval_set and not ann["iscrowd"]:
            n_gt_per_cat[ann["category_id"]] += 1
    n_dt = sum(1 for d in dts if d["image_id"] in eval_set)

    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    result: dict[str, Any] = {k: None for k in keys}
    result.update(n_images=len(eval_ids), n_gt=sum(n_gt_per_cat.values()), n_detections=n_dt)
    result["per_class"] = {
        name: {"AP": None, "AP50": None, "AP75": None, "n_gt": n_gt_per_cat[c["id"]]}
        for name, c in zip(names, cats)
    }
    result["pr_curve"] = {}
    if not eval_ids or not cats:
        return result  # nothing to evaluate: every value is undefined

    with contextlib.redirect_stdout(_stdio.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts) if dts else _empty_result(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = eval_ids
        ev.params.catIds = [c["id"] for c in cats]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    for k, v in zip(keys, ev.stats):
        result[k] = _r(v)

    precision = ev.eval["precision"]  # [T, R, K, A, M]; -1 where class k has no gt
    for k, (name, cat) in enumerate(zip(names, cats)):
        p = precision[:, :, k, _AREA_ALL, _MAXDET100]
        result["per_class"][name].update(
            AP=_r(_mean_defined(p)),
            AP50=_r(_mean_defined(p[_IOU50])),
            AP75=_r(_mean_defined(p[_IOU75])),
        )
        curve = p[_IOU50]
        if (curve > -1).all():
            result["pr_curve"][name] = [round(float(v), 4) for v in curve]
    return result


def _attribute(img: dict, key: str) -> Any:
    if key in img:
        return img[key]
    attrs = img.get("attributes")
    if isinstance(attrs, dict) and key in attrs:
        return attrs[key]
    return None


def slice_ids(gt: dict, key: str) -> dict[Any, list[int]]:
    """Group image ids by an attribute of the COCO image entry, e.g. ``time_of_day``.

    The attribute is read from the image entry itself, or from its ``attributes`` dict.
    Images without the attribute (or with null) are left out of every group. Groups and
    the ids in each are sorted, so the result is deterministic.
    """
    groups: dict[Any, list[int]] = defaultdict(list)
    for img in gt.get("images", []):
        value = _attribute(img, key)
        if value is None:
            continue
        try:
            hash(value)
        except TypeError:
            raise CvreproError(f"image {img.get('id')!r}: attribute {key!r} is not a scalar: {value!r}") from None
        groups[value].append(img["id"])
    return {v: sorted(groups[v]) for v in sorted(groups, key=lambda v: (type(v).__name__, str(v)))}
