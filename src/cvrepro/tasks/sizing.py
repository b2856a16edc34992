"""The task-specific parts of the dataset fingerprint (dataset/fingerprint.py) and of the defaults chosen
from it (tasks/defaults.py): box sizes for detection, mask areas for segmentation. The task classes call
these from their `fingerprint_labels`, `resolution_need` and `model_defaults` hooks.
"""

from __future__ import annotations

import math

import numpy as np

from cvrepro.config.schema import Model
from cvrepro.dataset.fingerprint import percentiles

# FCOS-style detectors here (fcos_tiny) have levels of stride 8, 16 and 32; a box is learnt on the level where
# half its longer side lies in (4, 8) x stride x anchor_scale (learning/models.py). An object needs a few feature
# locations across its shorter side on that level to be found: 4 is the figure used throughout.
STRIDES = (8, 16, 32)
LOCATIONS = 4
BOX_TARGET = STRIDES[0] * LOCATIONS  # px: the side a small object should keep after resizing
# px: the side the median object should keep, for detail. From the runs of issue 19 on natural photos of one
# large class (median object ~0.6 of the frame): 128 px stretched (median object ~75 px) test AP50 0.111 and 0.595,
# 320 letterboxed (~190 px) 0.333 and 0.713; the same move on a 640x480 microscopy set 0.569 -> 0.698. Three
# measurements: a starting point, not a law.
DETAIL = 192
# px: the largest input the detail rule alone asks for. It was measured on inputs up to 320 px; past that only
# small objects (BOX_TARGET) justify a larger input, so 12 px objects get more pixels than 60 px ones.
DETAIL_MAX_INPUT = 384
DETAIL_MEASURED = "natural photos measured test AP50 0.111 / 0.595 at ~75 px, 0.333 / 0.713 at ~190 px (issue 19)"
MASK_TARGET = 16  # px: 2 cells of unet_small's coarsest (stride-8) level


# --------------------------------------------------------------------------- detection


def box_sizes(files: list[dict], class_map: dict[int, str]) -> dict:
    """Per class and over all boxes: width, height, side (sqrt of the area), side relative to the image's
    longer side (what a resize scales), and shorter/longer side (thin objects), all in original pixels."""
    rows = np.array([(a["category_id"], a["bbox"][2], a["bbox"][3], max(f["width"], f["height"]))
                     for f in files for a in f["annotations"]], dtype=np.float64).reshape(-1, 4)
    cat, w, h, long_side = rows.T
    side = np.sqrt(w * h)
    rel = side / np.maximum(long_side, 1)
    thin = np.minimum(w, h) / np.maximum(np.maximum(w, h), 1e-9)

    def part(m):
        return {"width": percentiles(w[m]), "height": percentiles(h[m]), "side": percentiles(side[m]),
                "side_rel": percentiles(rel[m]), "short_over_long": percentiles(thin[m])}

    return {"object_size": {name: part(cat == cid) for cid, name in class_map.items()},
            "all_objects": part(np.ones(len(cat), dtype=bool))}


def smallest(fp: dict, key: str) -> tuple[float, str] | None:
    """The relative side the input must resolve: the 10% smallest objects overall, or the smallest class's
    median object when that is smaller (a small class is not given up for the sake of the big ones)."""
    overall = (fp.get("all_objects") or {}).get("side_rel", {})
    if not overall.get("n"):
        return None
    rel, why = overall["p10"], "the 10% smallest objects"
    for name, s in (fp.get(key) or {}).items():
        if s["side_rel"].get("n") and s["side_rel"]["p50"] < rel:
            rel, why = s["side_rel"]["p50"], f"the median object of the smallest class '{name}'"
    return rel, why


def box_need(fp: dict) -> list[tuple[float, int, str]]:
    """Two needs: small objects keep BOX_TARGET px (feature locations), the median object keeps DETAIL px."""
    found = smallest(fp, "object_size")
    if found is None:
        return []
    rel, why = found
    median = fp["all_objects"]["side_rel"]["p50"]
    detail = min(DETAIL, median * DETAIL_MAX_INPUT)  # px the median object gets at an input of at most 384
    capped = f" (at an input of at most {DETAIL_MAX_INPUT} px, as far as it was measured)" if detail < DETAIL else ""
    return [(rel, BOX_TARGET, f"{why} ({rel:.3f} of the image's longer side) should span {BOX_TARGET} px: "
                              f"{LOCATIONS} locations of the detector's finest (stride-{STRIDES[0]}) level"),
            (median, detail, f"the median object ({median:.3f} of the longer side) should span {DETAIL} px"
                             f"{capped}: {DETAIL_MEASURED}")]


def _locations(long_px: float, short_px: float, scale: float) -> float:
    """Feature locations across an object's shorter side on the level FCOS assigns it to."""
    for stride in STRIDES[:-1]:
        if long_px / 2 < 8 * stride * scale:
            return short_px / stride
    return short_px / STRIDES[-1]


def anchor_scale(fp: dict, size: int, model: Model) -> list[tuple[str, object, str]]:
    """`model.anchor_scale` (fcos_tiny): 1.0, measured best on the demo (person AP50 0.92 against 0.65 at 0.25),
    unless thin objects at this size land on a level too coarse to hold LOCATIONS across them, where 2.0 keeps
    them a level finer."""
    allobj = fp.get("all_objects") or {}
    # the model kind varies (detection's model section): only a model whose schema has the key takes it
    if not hasattr(model, "anchor_scale") or not allobj.get("side_rel", {}).get("n"):
        return []
    side = size * allobj["side_rel"]["p50"]
    thin = max(allobj["short_over_long"]["p10"], 1e-3)
    long_px, short_px = side / math.sqrt(thin), side * math.sqrt(thin)
    at1, at2 = _locations(long_px, short_px, 1.0), _locations(long_px, short_px, 2.0)
    what = (f"median object {side:.0f} px at size {size}; the 10% thinnest {short_px:.0f}x{long_px:.0f} px: "
            f"{at1:.1f} locations across at anchor_scale 1.0")
    if at1 < LOCATIONS and at2 > at1:
        return [("anchor_scale", 2.0, f"{what}, {at2:.1f} at 2.0 (one level finer)")]
    return [("anchor_scale", 1.0, f"{what}; 1.0 measured best on the demo (AP50 0.92 vs 0.65 at 0.25)")]


# --------------------------------------------------------------------------- segmentation


def mask_areas(files: list[dict], class_map: dict[int, str]) -> dict:
    """Per class: the side (sqrt of its pixel count) in each mask holding it, absolute and relative to the
    image's longer side, and the fraction of all labelled pixels it covers (`pixels`, set when masks are read)."""
    total = sum(sum(f.get("pixels", {}).values()) for f in files) or 1
    out = {}
    for cid, name in class_map.items():
        counts = [(f["pixels"][cid], max(f["width"], f["height"])) for f in files if f.get("pixels", {}).get(cid)]
        a = np.array(counts, dtype=np.float64).reshape(-1, 2)
        side = np.sqrt(a[:, 0])
        out[name] = {"side": percentiles(side), "side_rel": percentiles(side / np.maximum(a[:, 1], 1)),
                     "fraction": round(float(a[:, 0].sum()) / total, 6)}
    return {"mask_area": out}


def mask_need(fp: dict) -> list[tuple[float, int, str]]:
    found = None
    for name, s in (fp.get("mask_area") or {}).items():
        if s["side_rel"].get("n") and (found is None or s["side_rel"]["p50"] < found[0]):
            found = (s["side_rel"]["p50"], name)
    if found is None:
        return []
    rel, name = found
    return [(rel, MASK_TARGET, f"the smallest class '{name}' (median region {rel:.3f} of the image's longer side) "
                              f"should span {MASK_TARGET} px: 2 cells of the U-Net's coarsest (stride-8) level")]
