"""Metrics of the segmentation and classification tasks, from confusion matrices.

Pure numpy: `confusion` counts (actual, predicted) pairs; the score functions turn a
matrix into the numbers evaluate reports. Rows are actual ids, columns predicted ids.
"""

from __future__ import annotations

import numpy as np


def confusion(actual: np.ndarray, predicted: np.ndarray, k: int, ignore_index: int | None = None) -> np.ndarray:
    """k x k int64 counts of (actual, predicted) ids; `ignore_index` entries of `actual` are skipped."""
    a = np.asarray(actual, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if ignore_index is not None:
        keep = a != ignore_index
        a, p = a[keep], p[keep]
    return np.bincount(a * k + p, minlength=k * k).reshape(k, k)


def _ratio(num: float, den: float) -> float | None:
    return round(float(num) / float(den), 6) if den else None


def segmentation_scores(cm: np.ndarray, names: dict[int, str]) -> dict:
    """mIoU (mean IoU over the classes in `names`, background included, that occur in the
    ground truth or the prediction), per-class IoU (None where a class never occurs) and
    pixel accuracy (over labelled, non-ignored pixels)."""
    ids = sorted(names)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    per_class = {names[i]: {"IoU": _ratio(tp[i], union[i]), "pixels": int(cm[i].sum())} for i in ids}
    ious = [v["IoU"] for v in per_class.values() if v["IoU"] is not None]
    return {
        "mIoU": round(float(np.mean(ious)), 6) if ious else None,
        "pixel_accuracy": _ratio(tp.sum(), cm.sum()),
        "per_class": per_class,
    }


def classification_scores(cm: np.ndarray, names: dict[int, str]) -> dict:
    """Accuracy, macro F1 (mean over the classes in `names`; a class with no support and no
    prediction counts as F1 = 0 only if it has support, otherwise it is left out) and per-class
    precision, recall, F1 and support."""
    ids = sorted(names)
    tp = np.diag(cm).astype(np.float64)
    per_class, f1s = {}, []
    for i in ids:
        support, predicted = int(cm[i].sum()), int(cm[:, i].sum())
        precision, recall = _ratio(tp[i], predicted), _ratio(tp[i], support)
        f1 = _ratio(2 * tp[i], support + predicted)
        if support or predicted:
            f1s.append(f1 or 0.0)
        per_class[names[i]] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "accuracy": _ratio(tp.sum(), cm.sum()),
        "macro_f1": round(float(np.mean(f1s)), 6) if f1s else None,
        "per_class": per_class,
    }
