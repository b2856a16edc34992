"""Label issues as rows of `cvrepro labels apply`'s CSV, and their picture sheet, per task.

A collector takes the out-of-sample prediction of each image (`add`, from learning/label_issues.py),
then scores them all at once (`issues`: classification's thresholds need every image) and draws the
top ones (`sheet`: the ground truth beside the suggestion). Each issue is {"row": the CSV fields,
"split", "index"} (where its image is in data/processed) and what the sheet draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvrepro.config.schema import LabelIssues, Params
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json
from cvrepro.dataset.index import annotations_file
from cvrepro.tasks.issues import ACTIONS, DETECTION_DEFAULTS, confident_learning, detection_issues, mask_disagreement

REASONS = {
    "missing": "no box where the model finds a {category} ({score:.2f})",
    "spurious": "the model finds nothing in this {category} box ({score:.2f})",
    "wrong_class": "the model sees a {category} here ({score:.2f})",
    "misplaced": "the model puts this {category} elsewhere ({score:.2f})",
    "mislabeled": "the model sees a {category} ({score:.2f}; confident learning)",
    "mask_disagreement": "the model disagrees on {score:.0%} of the labelled pixels",
}


def _row(image: str, annotation_id, reason: str, category: str, box, score: float) -> dict:
    action = ACTIONS[reason]
    row = {"image": image, "annotation_id": "" if annotation_id is None else str(annotation_id), "action": action,
           "category": category if action in ("add", "relabel") else "", "x": "", "y": "", "w": "", "h": "",
           "score": f"{score:.4f}", "reason": f"{reason}: " + REASONS[reason].format(category=category, score=score)}
    if action in ("add", "move"):
        row.update(zip(("x", "y", "w", "h"), (f"{v:.1f}" for v in box)))
    return row


def _clip_xywh(box, width: float, height: float) -> list[float] | None:
    """xyxy -> [x, y, w, h] inside the image, to one decimal (what `labels apply` accepts); None if empty."""
    x1, y1 = max(0.0, round(box[0], 1)), max(0.0, round(box[1], 1))
    x2, y2 = min(float(width), round(box[2], 1)), min(float(height), round(box[3], 1))
    return [x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)] if x2 - x1 >= 1 and y2 - y1 >= 1 else None


class DetectionIssues:
    def __init__(self, cfg: Params, root: Path, class_names: dict[int, str], li: LabelIssues | None):
        from cvrepro.tasks.detection import accepted_index

        self.index, self.names = accepted_index(cfg, root), class_names
        self.thresholds = li.detection if li is not None else DETECTION_DEFAULTS
        self.images = {im["id"]: im for im in self.index["images"]}
        self.anns: dict[int, list[dict]] = {}
        for a in self.index.get("annotations", []):
            if not a.get("iscrowd", 0):  # the boxes training saw, in index order (as preprocess stores them)
                self.anns.setdefault(a["image_id"], []).append(a)
        self.seen: list[tuple] = []

    def add(self, split: str, data, i: int, out: dict) -> None:
        sx, sy = (float(s) for s in data.scales[i])
        keep = np.isin(out["labels"], list(self.names))
        boxes = np.asarray(out["boxes"], float)[keep] / np.array([sx, sy, sx, sy])
        self.seen.append((split, i, int(data.image_ids[i]),
                          {"boxes": boxes, "scores": out["scores"][keep], "labels": out["labels"][keep]}))

    def issues(self) -> list[dict]:
        found = []
        for split, i, image_id, pred in self.seen:
            im, anns = self.images[image_id], self.anns.get(image_id, [])
            gt = {"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4),
                  "labels": np.array([a["category_id"] for a in anns], dtype=np.int64)}
            for issue in detection_issues(gt, pred, self.thresholds):
                box = _clip_xywh(issue["box"], im["width"], im["height"])
                if box is None:
                    continue
                ann = anns[issue["gt"]] if issue["gt"] is not None else None
                row = _row(im["file_name"], ann["id"] if ann else None, issue["reason"],
                           self.names.get(issue["category"], str(issue["category"])), box, issue["score"])
                found.append({"row": row, "split": split, "index": i, "gt": gt, "issue": issue,
                              "score": issue["score"], "reason": issue["reason"]})
        return found

    def sheet(self, top: list[dict], splits: dict, out_path: Path) -> None:
        from cvrepro.learning.pictures import prediction_grid

        images, gts, suggestions = [], [], []
        for t in top:
            data = splits[t["split"]]
            s = np.tile(np.asarray(data.scales[t["index"]], float), 2)
            gt_boxes, labels = t["gt"]["boxes"] * s, t["gt"]["labels"]
            boxes, labs, scores = list(gt_boxes), list(labels), [1.0] * len(labels)
            g, issue = t["issue"]["gt"], t["issue"]
            if g is not None:  # the suggestion replaces (or removes) that box
                del boxes[g], labs[g], scores[g]
            if issue["reason"] != "spurious":
                boxes.append(np.asarray(issue["box"]) * s)
                labs.append(issue["category"])
                scores.append(issue["score"])
            images.append(data.images[t["index"]].transpose(1, 2, 0))
            gts.append({"boxes": gt_boxes, "labels": labels})
            suggestions.append({"boxes": np.array(boxes).reshape(-1, 4), "labels": np.array(labs),
                                "scores": np.array(scores)})
        prediction_grid(images, gts, suggestions, self.names, out_path, score_threshold=0.0,
                        titles=("ground truth", "suggestion"))


class ClassificationIssues:
    def __init__(self, cfg: Params, root: Path, class_names: dict[int, str], li: LabelIssues | None):
        index = read_json(root / annotations_file(cfg))
        self.names = class_names
        self.images = {im["id"]: im for im in index["images"]}
        self.ann = {a["image_id"]: a for a in index.get("annotations", [])}
        self.seen: list[tuple] = []

    def add(self, split: str, data, i: int, out: dict) -> None:
        self.seen.append((split, i, int(data.image_ids[i]), int(data.labels[i]), np.asarray(out["scores"], float)))

    def issues(self) -> list[dict]:
        if not self.seen:
            return []
        probs = np.stack([s[4] for s in self.seen])
        found = []
        for r in confident_learning(probs, np.array([s[3] for s in self.seen]), list(self.names)):
            split, i, image_id, label, _p = self.seen[r["index"]]
            ann = self.ann[image_id]
            row = _row(self.images[image_id]["file_name"], ann["id"], "mislabeled", self.names[r["category"]],
                       None, r["score"])
            found.append({"row": row, "split": split, "index": i, "label": label, "suggested": r["category"],
                          "score": r["score"], "reason": "mislabeled"})
        return found

    def sheet(self, top: list[dict], splits: dict, out_path: Path) -> None:
        from cvrepro.learning.pictures import label_grid

        label_grid([splits[t["split"]].images[t["index"]].transpose(1, 2, 0) for t in top],
                   [t["label"] for t in top], [t["suggested"] for t in top], [t["score"] for t in top],
                   self.names, out_path)


class SegmentationIssues:
    """`labels apply` does not edit masks: the rows name images to review in a mask tool (action empty)."""

    def __init__(self, cfg: Params, root: Path, class_names: dict[int, str], li: LabelIssues | None):
        index = read_json(root / annotations_file(cfg))
        self.names = {0: "background", **class_names}
        self.images = {im["id"]: im for im in index["images"]}
        self.ignore = cfg.dataset.ignore_index
        self.min_share = li.min_score if li is not None else 0.0
        self.seen: list[tuple] = []

    def add(self, split: str, data, i: int, out: dict) -> None:
        gt = np.asarray(data.masks[i])
        wrong = mask_disagreement(gt, out["mask"], self.ignore)
        if wrong > self.min_share:  # the masks of the images worth showing only
            self.seen.append((split, i, int(data.image_ids[i]), wrong, out["mask"].astype(np.uint8)))

    def issues(self) -> list[dict]:
        return [{"row": _row(self.images[image_id]["file_name"], None, "mask_disagreement", "", None, wrong),
                 "split": split, "index": i, "mask": mask, "score": wrong, "reason": "mask_disagreement"}
                for split, i, image_id, wrong, mask in self.seen]

    def sheet(self, top: list[dict], splits: dict, out_path: Path) -> None:
        from cvrepro.learning.pictures import mask_grid

        mask_grid([splits[t["split"]].images[t["index"]].transpose(1, 2, 0) for t in top],
                  [np.asarray(splits[t["split"]].masks[t["index"]]) for t in top], [t["mask"] for t in top],
                  self.names, out_path, ignore_index=self.ignore)


COLLECTORS = {"detection": DetectionIssues, "classification": ClassificationIssues,
              "segmentation": SegmentationIssues}


def collector(task, params: ParamsLike, root: Path, class_names: dict[int, str], li: LabelIssues | None):
    """The issue collector of `task` (a Task); CvreproError for a task without one. li: the `label_issues` section
    (None: the built-in thresholds)."""
    from cvrepro.core.fileio import CvreproError

    if task.name not in COLLECTORS:
        raise CvreproError(f"label-issues: no label-issue scoring for task {task.name!r} "
                           f"(known: {', '.join(COLLECTORS)})")
    return COLLECTORS[task.name](typed(params), root, class_names, li)
