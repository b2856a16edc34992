"""Likely label mistakes from out-of-sample predictions, scored per task (numpy only).

Each scorer compares a label with what a model that never trained on it predicts, and says what a
reviewer should do (an action of `cvrepro labels apply`) with a score in [0, 1] (higher: more likely
a mistake) and a reason. The runner (learning/label_issues.py) supplies the predictions.

- detection: ObjectLab-style (cleanlab's method, re-derived here; cleanlab itself is AGPL and no
  dependency): per ground-truth box, the best overlapping predictions of its own and of other
  classes say whether it is of the wrong class, badly placed or on nothing (spurious); a confident
  prediction overlapping no box is a missing box.
- classification: confident learning (Northcutt et al.): class j's threshold is the mean predicted
  probability of j over the images labelled j; an image whose confident class (above threshold,
  highest probability) is not its label is an issue, and so is one whose most probable class is not its label;
  ranked by its label's low probability.
- segmentation: per image, the share of labelled pixels whose class the model disagrees with.
"""

from __future__ import annotations

import numpy as np

from cvrepro.config.schema import LabelIssuesDetection

# reason -> the `labels apply` action that fixes it
ACTIONS = {"missing": "add", "spurious": "delete", "wrong_class": "relabel", "misplaced": "move",
           "mislabeled": "relabel", "mask_disagreement": ""}
DETECTION_DEFAULTS = LabelIssuesDetection(match_iou=0.5, overlap_iou=0.1, missing_iou=0.3, missing_score=0.4, near=0.8,
                                          size_ratio=1.8, evidence=0.3, spurious_score=0.5)  # = conf/label_issues


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a [N,4] against b [M,4] -> [N,M]."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _inside(pb: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Per prediction, the largest share of its area inside one labelled box."""
    if not len(gb) or not len(pb):
        return np.zeros(len(pb))
    lt = np.maximum(pb[:, None, :2], gb[None, :, :2])
    rb = np.minimum(pb[:, None, 2:], gb[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = np.maximum((pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1]), 1e-12)
    return (inter / area[:, None]).max(axis=1)


def _near(g: np.ndarray, p: np.ndarray, near: float, size_ratio: float) -> bool:
    """Is prediction p the same object as box g, displaced: centres within `near` of g's size per axis and
    sides within a factor `size_ratio`."""
    gw, gh, pw, ph = g[2] - g[0], g[3] - g[1], p[2] - p[0], p[3] - p[1]
    if min(gw, gh, pw, ph) <= 0:
        return False
    dx = abs((g[0] + g[2]) - (p[0] + p[2])) / 2 / gw
    dy = abs((g[1] + g[3]) - (p[1] + p[3])) / 2 / gh
    sides = max(gw / pw, pw / gw, gh / ph, ph / gh)
    return dx <= near and dy <= near and sides <= size_ratio


def detection_issues(gt: dict, pred: dict, c: LabelIssuesDetection = DETECTION_DEFAULTS) -> list[dict]:
    """Issues of one image. gt: boxes [N,4] xyxy, labels [N]; pred: boxes [M,4], scores [M], labels [M] (same
    pixels). Returns [{reason, gt (index or None), category, box (xyxy, suggested), score}]: one per
    ground-truth box with an issue (the kind its evidence points to: another class where its own is weaker, else a displaced
    prediction of its class, else nothing there; the score ranks within the kind) plus one per missing box."""
    gb, gl = np.asarray(gt["boxes"], float).reshape(-1, 4), np.asarray(gt["labels"]).reshape(-1)
    pb, ps = np.asarray(pred["boxes"], float).reshape(-1, 4), np.asarray(pred["scores"], float).reshape(-1)
    pl = np.asarray(pred["labels"]).reshape(-1)
    iou = box_iou(gb, pb)
    best_gt = iou.max(axis=0) if len(gb) else np.zeros(len(pb))
    owner = iou.argmax(axis=0) if len(gb) else np.full(len(pb), -1)
    issues, used = [], set()
    for g in range(len(gb)):
        match = iou[g] >= c.match_iou
        same = float(ps[match & (pl == gl[g])].max(initial=0.0))
        other_mask = match & (pl != gl[g])
        other = float(ps[other_mask].max(initial=0.0))
        moved = [j for j in range(len(pb)) if pl[j] == gl[g] and iou[g, j] < c.match_iou and owner[j] == g
                 and best_gt[j] < c.match_iou and _near(gb[g], pb[j], c.near, c.size_ratio)]
        j = max(moved, key=lambda k: ps[k]) if moved else None
        if other > same and other >= c.evidence:  # the evidence decides the kind; the score ranks within it
            k = int(np.flatnonzero(other_mask)[ps[other_mask].argmax()])
            reason, score, category, box = "wrong_class", other * (1 - same), int(pl[k]), gb[g]
        elif j is not None and ps[j] > same and ps[j] >= c.evidence:
            used.add(j)
            reason, score, category, box = "misplaced", float(ps[j]) * (1 - same) * (1 - iou[g, j]), int(gl[g]), pb[j]
        else:
            overlap = float(ps[iou[g] >= c.overlap_iou].max(initial=0.0))
            near_any = max((float(ps[k]) for k in range(len(pb))
                            if _near(gb[g], pb[k], c.near, c.size_ratio)), default=0.0)
            reason, score, category, box = "spurious", 1 - max(overlap, near_any), int(gl[g]), gb[g]
            if score < c.spurious_score:  # the model half sees it: a box it finds, however weakly, is no issue
                continue
        issues.append({"reason": reason, "gt": g, "category": category, "box": [float(v) for v in box],
                       "score": float(score)})
    issues += _missing(pb, ps, pl, best_gt, used, c, gb)
    return issues


def _missing(pb, ps, pl, best_gt, used: set, c: "LabelIssuesDetection", gb: np.ndarray) -> list[dict]:
    """Confident predictions overlapping no box (class-agnostic: the best of overlapping predictions)."""
    out, kept = [], []
    inside = _inside(pb, gb)
    for j in np.argsort(-ps, kind="stable"):
        if ps[j] < c.missing_score or j in used or best_gt[j] >= c.missing_iou or inside[j] >= 0.5:
            continue  # weak, another box's, or mostly inside a labelled box (a part of a labelled object)
        if kept and box_iou(pb[j], pb[kept]).max() >= c.missing_iou:
            continue  # a weaker prediction of the same object (another class, another place)
        kept.append(int(j))
        out.append({"reason": "missing", "gt": None, "category": int(pl[j]),
                    "box": [float(v) for v in pb[j]], "score": float(ps[j])})
    return out


def confident_learning(probs: np.ndarray, labels: np.ndarray, class_ids: list[int],
                       with_argmax: bool = True) -> list[dict]:
    """Confident-learning issues of classification labels.

    probs: [N, K] out-of-sample probabilities over category ids 0..K-1; labels: [N] category ids; class_ids:
    the ids that are classes (a head's unused outputs are left out). Returns [{index, category (suggested),
    score, confidence}] for the images whose confident class differs from their label (and, with_argmax, those
    whose most probable class does: a less sure model's doubts, ranked among the rest), most likely first:
    score = 1 - p(label)."""
    ids = np.asarray(sorted(class_ids))
    p = np.asarray(probs, float)[:, ids]
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    col = {int(cid): k for k, cid in enumerate(ids)}
    y = np.array([col.get(int(v), -1) for v in labels])
    thresholds = np.array([p[y == k, k].mean() if np.any(y == k) else 1.0 for k in range(len(ids))])
    out = []
    for i in range(len(p)):
        if y[i] < 0:
            continue
        above = np.flatnonzero(p[i] >= thresholds)
        j = int(above[p[i, above].argmax()]) if len(above) else y[i]
        if j == y[i] and with_argmax:  # not in the confident joint's off-diagonal, but the model prefers another
            j = int(p[i].argmax())
        if j != y[i]:
            out.append({"index": i, "category": int(ids[j]), "score": float(1 - p[i, y[i]]),
                        "confidence": float(p[i, j])})
    return sorted(out, key=lambda r: -r["score"])


def mask_disagreement(gt: np.ndarray, pred: np.ndarray, ignore_index: int) -> float:
    """The share of labelled pixels (not ignore_index) whose class the prediction disagrees with."""
    labelled = gt != ignore_index
    n = int(np.count_nonzero(labelled))
    return float(np.count_nonzero((gt != pred) & labelled) / n) if n else 0.0
