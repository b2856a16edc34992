"""COCO-style detection metrics through faster-coco-eval, made safe for a pipeline.

faster-coco-eval is the COCO API with the per-image matching and accumulation in C++:
the same 12 statistics as pycocotools (tests/test_coco_eval.py compares them on the demo
and on thousands of synthetic images) in a fraction of the time. This wrapper works on
copies (COCO tools add keys to the dicts they are given), handles zero detections, and
reports undefined values as ``None`` (never COCO's -1), so means only ever cover classes
that have ground truth in the evaluated images.

One evaluation serves a split and all its slices: `CocoEvaluation` matches every
(image, class) once; `metrics(img_ids)` accumulates the per-image results of any subset
of those images (a slice value) without matching or copying anything again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from cvrepro.core.fileio import CvreproError

# Indices into COCOeval.eval["precision"], shaped [T iou, R recall, K class, A area, M maxDets].
_IOU50, _IOU75 = 0, 5  # iouThrs = .50, .55, ..., .95
_AREA_ALL = 0  # areaRngLbl = all, small, medium, large
_MAXDET100 = 2  # maxDets = 1, 10, 100

N_RECALL_POINTS = 101  # COCO's recThrs: 0.00, 0.01, ..., 1.00
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _gt_subset(gt: dict, img_set: set) -> dict:
    """The ground truth of the images in `img_set`, with the fields COCO needs filled in.

    Only the annotations of those images are copied (shallow: a new dict per annotation,
    so the caller's dicts are never touched); the rest of the file is not copied at all.
    """
    next_id = max((a["id"] for a in gt["annotations"] if "id" in a), default=0) + 1
    anns = []
    for ann in gt["annotations"]:
        if ann["image_id"] not in img_set:
            continue
        ann = dict(ann)
        if "id" not in ann:  # createIndex keys annotations by id
            ann["id"], next_id = next_id, next_id + 1
        ann.setdefault("iscrowd", 0)  # computeIoU reads it for every gt box
        if "area" not in ann:  # area ranges (small/medium/large) filter on it
            _, _, w, h = ann["bbox"]
            ann["area"] = float(w) * float(h)
        anns.append(ann)
    images = [dict(img) for img in gt["images"] if img["id"] in img_set]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in gt["categories"]]}


def _dt_copy(detections: list[dict], img_set: set, cat_set: set) -> list[dict]:
    """Plain-python copies (loadRes adds keys in place and chokes on numpy scalars)."""
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
        image_id, category_id = _plain(image_id), _plain(category_id)
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


class CocoEvaluation:
    """Box AP/AR of `detections` on the images `img_ids` of `gt` (all images when None),
    matched once; `metrics(subset)` for the whole set or any subset of it."""

    def __init__(self, gt: dict, detections: list[dict], img_ids=None, class_names: dict | None = None):
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise CvreproError(f"ground truth is not a COCO detection dict: missing list '{key}'")
        img_set = {img["id"] for img in gt["images"]}
        self.cats = sorted(gt["categories"], key=lambda c: c["id"])  # COCOeval orders catIds sorted
        dts = _dt_copy(detections, img_set, {c["id"] for c in self.cats})
        if img_ids is None:
            self.ids = sorted(img_set)
        else:
            self.ids = sorted({_plain(i) for i in img_ids})
            unknown = [i for i in self.ids if i not in img_set]
            if unknown:
                raise CvreproError(f"img_ids not in the ground truth: {unknown[:10]}")
        self.names = [_class_name(c, class_names) for c in self.cats]
        if len(set(self.names)) != len(self.names):
            raise CvreproError(f"class names are not unique: {self.names}")
        eval_set = set(self.ids)
        self.gt = _gt_subset(gt, eval_set)
        self.dts = [d for d in dts if d["image_id"] in eval_set]
        self._ev = self._evaluate() if self.ids and self.cats else None

    def _evaluate(self):
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO()
        coco_gt.dataset = self.gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(self.dts) if self.dts else self._empty_result(coco_gt)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", separate_eval=True, print_function=_silent)
        ev.params.imgIds = self.ids
        ev.params.catIds = [c["id"] for c in self.cats]
        ev.evaluate()  # per (class, area range, image) results, kept for every subset below
        return ev

    @staticmethod
    def _empty_result(coco_gt):
        """A results object with no detections: loadRes refuses an empty list, so build it directly."""
        from faster_coco_eval import COCO

        res = COCO()
        res.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                       "annotations": []}
        res.createIndex()
        return res

    def _accumulate(self, ids: list):
        """COCO's accumulate + summarize over the per-image results of `ids` (a subset of self.ids)."""
        import copy

        from faster_coco_eval.core.faster_eval_api import _C

        ev = self._ev
        base = ev._paramsEval
        n_img, n_area = len(base.imgIds), len(base.areaRng)
        pos = {img: i for i, img in enumerate(base.imgIds)}
        keep = [pos[i] for i in ids]
        # COCO lays the per-image results out as [class][area range][image]
        chosen = [ev._evalImgs_cpp[(k * n_area + a) * n_img + i]
                  for k in range(len(base.catIds)) for a in range(n_area) for i in keep]
        params = copy.copy(base)
        params.imgIds = list(ids)
        ev.eval = _C.COCOevalAccumulate(params, chosen)
        ev.params = params
        ev.summarize()
        return ev.stats, ev.eval["precision"]

    def metrics(self, img_ids=None) -> dict[str, Any]:
        """The metrics of `img_ids` (all evaluated images when None); see `coco_metrics`."""
        ids = self.ids if img_ids is None else sorted({_plain(i) for i in img_ids})
        outside = [i for i in ids if i not in set(self.ids)]
        if outside:
            raise CvreproError(f"img_ids not among the evaluated images: {outside[:10]}")
        id_set = set(ids)
        n_gt_per_cat: dict[Any, int] = defaultdict(int)
        for ann in self.gt["annotations"]:
            if ann["image_id"] in id_set and not ann["iscrowd"]:
                n_gt_per_cat[ann["category_id"]] += 1
        result: dict[str, Any] = {k: None for k in STAT_KEYS}
        result.update(n_images=len(ids), n_gt=sum(n_gt_per_cat.values()),
                      n_detections=sum(1 for d in self.dts if d["image_id"] in id_set))
        result["per_class"] = {name: {"AP": None, "AP50": None, "AP75": None, "n_gt": n_gt_per_cat[c["id"]]}
                               for name, c in zip(self.names, self.cats)}
        result["pr_curve"] = {}
        if not ids or self._ev is None:
            return result  # nothing to evaluate: every value is undefined
        stats, precision = self._accumulate(ids)  # precision [T, R, K, A, M]; -1 where class k has no gt
        for k, v in zip(STAT_KEYS, stats):
            result[k] = _r(v)
        for k, name in enumerate(self.names):
            p = precision[:, :, k, _AREA_ALL, _MAXDET100]
            result["per_class"][name].update(AP=_r(_mean_defined(p)), AP50=_r(_mean_defined(p[_IOU50])),
                                             AP75=_r(_mean_defined(p[_IOU75])))
            curve = p[_IOU50]
            if (curve > -1).all():
                result["pr_curve"][name] = [round(float(v), 4) for v in curve]
        return result


def _silent(*args, **kwargs) -> None:
    """faster-coco-eval's progress lines go nowhere (a stage's stdout is for its own messages)."""


def coco_metrics(
    gt: dict,
    detections: list[dict],
    img_ids: list[int] | None = None,
    class_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Box AP/AR over `img_ids` (all images when None).

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
    return CocoEvaluation(gt, detections, img_ids, class_names).metrics()


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
