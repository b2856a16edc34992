"""Detection parity: which detections of two runtimes are the same object, and which may rightly be missing.

PyTorch and ONNX Runtime run the same graph but differ in the last bits of a float. For detections that
is enough to change which detections survive the model's cuts: torchvision keeps the scores above
`score_thresh`, then the best `detections_per_img`. A detection whose score sits on either cut (or ties
with the last kept one) may be kept by one runtime and dropped by the other. Such a detection is
*excused*: it may go unmatched. It is never paired with another object to make up for it, which is what
a nearest-box pairing did (issue 22: the partner cut at the cap, its neighbour 4.3 px away reported as a
box difference, the release refused).

So detections are paired one-to-one, within a label, only where they can be the same object (IoU of at
least MATCH_IOU, or coordinates within the box tolerance, which also covers zero-area boxes), greedily by
IoU, then the closest box, then the closest score. Two excused detections that disagree beyond the
tolerance are two objects cut differently, not one object moved, so they are not paired. Every detection
above the cuts must have a partner within the tolerance: a changed normalisation, a wrong resize or a
box a pixel off still refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH_IOU = 0.5  # below this overlap two boxes are not one object (a box 1 px off still is, down to 3 px wide)


@dataclass
class ImageParity:
    """One image's comparison: the worst paired differences and the detections without a partner."""

    box_diff: float = 0.0
    score_diff: float = 0.0
    unmatched: int = 0  # above the cuts: the runtimes disagree
    excused: int = 0  # on a cut: one runtime may rightly keep it and the other not
    at_cap: bool = False


def score_cut(ref: dict, got: dict, floor: float, cap: int | None) -> tuple[float, bool]:
    """The score at or below which a detection may be missing from one side: the model's `floor`, or the
    lowest kept score of a side holding `cap` detections (or more: a runtime that keeps one extra); and
    whether a side was at the cap."""
    cut, at_cap = float(floor), False
    for side in (ref, got):
        if cap is not None and len(side["scores"]) >= cap:
            cut, at_cap = max(cut, float(np.min(side["scores"]))), True
    return cut, at_cap


def box_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and largest coordinate difference (px) of every pair of xyxy boxes a[i], b[j]; a pair of
    zero-area boxes has IoU 0 and is told apart by its coordinates alone."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh.prod(-1)
    area_a, area_b = (np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1) for x in (a, b))
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou, np.abs(a[:, None, :] - b[None, :, :]).max(-1, initial=0.0)


def match_image(ref: dict, got: dict, tol: dict, floor: float = 0.0, cap: int | None = None) -> ImageParity:
    """Pair `ref`'s and `got`'s detections of one image ({"boxes", "scores", "labels"}) one-to-one and
    report the worst pair and the unpaired ones, excused or not (see the module's docstring)."""
    cut, at_cap = score_cut(ref, got, floor, cap)
    rs, gs = (np.asarray(d["scores"], np.float64).ravel() for d in (ref, got))
    ex_r, ex_g = rs <= cut + tol["score_abs"], gs <= cut + tol["score_abs"]
    iou, linf = box_overlap(ref["boxes"], got["boxes"])
    dscore = np.abs(rs[:, None] - gs[None, :])
    agree = (linf <= tol["box_px"]) & (dscore <= tol["score_abs"])
    candidate = ((np.asarray(ref["labels"]).ravel()[:, None] == np.asarray(got["labels"]).ravel()[None, :])
                 & ((iou >= MATCH_IOU) | (linf <= tol["box_px"])) & (agree | ~(ex_r[:, None] & ex_g[None, :])))
    ii, jj = np.nonzero(candidate)
    out, used_r, used_g = ImageParity(at_cap=at_cap), set(), set()
    for k in np.lexsort((dscore[ii, jj], linf[ii, jj], -iou[ii, jj])):
        i, j = int(ii[k]), int(jj[k])
        if i in used_r or j in used_g:
            continue
        used_r.add(i), used_g.add(j)
        out.box_diff, out.score_diff = max(out.box_diff, float(linf[i, j])), max(out.score_diff, float(dscore[i, j]))
    for excused, used in ((ex_r, used_r), (ex_g, used_g)):
        alone = np.array([n not in used for n in range(len(excused))], dtype=bool)
        out.excused += int((alone & excused).sum())
        out.unmatched += int((alone & ~excused).sum())
    return out
