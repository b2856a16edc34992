"""Object detection: COCO boxes in the labels index, torchvision detectors, COCO AP.

Labels: each image's `annotations` with a `bbox` [x, y, w, h] in pixels and a category id.
Preprocess stores boxes scaled to the resized images; the models keep torchvision's
calling convention; evaluation is COCO AP (faster-coco-eval) on the original pixels, per class and per
slice; the val plots are a precision-recall CSV and a grid of predictions.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cvrepro.config.params import DETECTIONS_PER_IMG, NMS_THRESH, SCORE_THRESH, recorded
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import read_json
from cvrepro.core.paths import PLOTS_DIR
from cvrepro.core.problems import Problems, is_int
from cvrepro.dataset.index import BoxCheck, annotations_file, box_problem, canonical_number, checked_annotations
from cvrepro.tasks import register, sizing
from cvrepro.tasks.base import Task
from cvrepro.learning.samples import SeededSamples

HEADLINE = ("AP", "AP50", "AP75", "AR100")
PR_VAL = PLOTS_DIR / "pr_val.csv"


def parse_annotations(
    annotations: list,
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: Problems,
    rejected: set,
    invalid: BoxCheck | None = None,
) -> dict[int, list[dict]]:
    """image id → its reduced annotations [{id, category_id, bbox, iscrowd}] sorted by id.

    A zero-size or out-of-image box is a problem, unless `invalid` (`dataset.invalid` drop or clip) drops or
    clips it and lists it in its rows. A bbox that is not 4 numbers is always a problem."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    required = ("id", "image_id", "category_id", "bbox")
    for where, a, image in checked_annotations(annotations, required, images, class_map, ann_path, problems, rejected):
        iscrowd = a.get("iscrowd", 0)
        if not is_int(iscrowd) or iscrowd not in (0, 1):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        bbox = a["bbox"]
        bad_box = box_problem(bbox, image["width"], image["height"])
        if bad_box and four_numbers(bbox) and invalid is not None and invalid.mode != "fail":
            bbox = invalid(bbox, image["width"], image["height"], image["path"], f"annotation id {a['id']}")
            if bbox is None:
                continue
        elif bad_box:
            hint = " (dataset.invalid: drop or clip keeps the rest and lists each)" if four_numbers(bbox) else ""
            problems.add(f"{where}, image id {image['id']} ({image['path']}): {bad_box}{hint}")
            continue
        bbox = [canonical_number(v) for v in bbox]
        by_image[image["id"]].append({"id": a["id"], "category_id": a["category_id"], "bbox": bbox, "iscrowd": iscrowd})
    for anns in by_image.values():
        anns.sort(key=lambda a: a["id"])
    return by_image


def four_numbers(bbox) -> bool:
    """A bbox `dataset.invalid` can drop or clip: a list of 4 numbers (NaN and inf included); anything else is
    malformed, always an error."""
    return isinstance(bbox, list) and len(bbox) == 4 \
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)


def accepted_index(params: ParamsLike, root: Path) -> dict:
    """The labels index as snapshot accepted it: with `dataset.invalid` drop or clip, the boxes it dropped are
    left out and those it clipped are clipped (the file itself stays as delivered). What preprocess trains on
    and evaluation scores against."""
    cfg = typed(params)
    coco = read_json(root / annotations_file(cfg))
    mode = cfg.dataset.invalid
    if mode == "fail":  # snapshot refused any bad box: the file is what it accepted
        return coco
    check = BoxCheck(mode, "dataset.invalid")
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco.get("images", [])}
    kept = []
    for a in coco.get("annotations", []):
        bbox = check(a["bbox"], *sizes[a["image_id"]], "", "")
        if bbox is not None:
            kept.append(a if bbox is a["bbox"] else {**a, "bbox": bbox, "area": bbox[2] * bbox[3]})
    return {**coco, "annotations": kept}


def known_labels_only(preds: list[dict], class_names: dict[int, str]) -> list[dict]:
    """Drop detections of ids outside the class map. Labels are category ids, so the
    head has outputs for unused ids (0, gaps): they never see a positive and score
    low, but are not classes."""
    import numpy as np

    known = np.array(sorted(class_names))
    return [{k: v[np.isin(p["labels"], known)] for k, v in p.items()} for p in preds]


def coco_detections(preds: list[dict], data) -> list[dict]:
    """Predictions mapped back to original image pixels, as COCO results."""
    dets = []
    for i, det in enumerate(preds):
        sx, sy = (float(s) for s in data.scales[i])
        for (x1, y1, x2, y2), score, label in zip(det["boxes"], det["scores"], det["labels"]):
            dets.append({"image_id": int(data.image_ids[i]), "category_id": int(label), "score": float(score),
                         "bbox": [x1 / sx, y1 / sy, (x2 - x1) / sx, (y2 - y1) / sy]})
    return dets


def split_metrics(coco: dict, dets: list[dict], ids: list[int], class_names: dict, slices: dict) -> tuple[dict, dict]:
    """The split's metrics and its slices' from one COCO evaluation (each slice accumulates the
    per-image results of its images: nothing is matched or copied again)."""
    from cvrepro.learning.coco_metrics import CocoEvaluation

    evaluation = CocoEvaluation(coco, dets, ids, class_names)
    full = evaluation.metrics()
    out = {k: full[k] for k in HEADLINE}
    out["per_class"] = {name: {k: v[k] for k in ("AP", "AP50", "AP75")} for name, v in full["per_class"].items()}
    in_split = set(evaluation.ids)
    for key, groups in slices.items():
        out[key] = {}
        for value, group_ids in groups.items():
            members = sorted(in_split.intersection(group_ids))
            m = evaluation.metrics(members)
            out[key][str(value)] = {"images": len(members), **{k: m[k] for k in ("AP", "AP50", "AP75")}}
    return out, full["pr_curve"]


class TrainSet(SeededSamples):
    """Samples of a processed split with a seeded horizontal flip (boxes flipped with the image), then
    the `augment` transforms, all drawn from (seed, epoch, index)."""

    augment_boxes = True

    def __getitem__(self, i: int):
        import torch

        from cvrepro.learning.engine import to_tensor

        image = to_tensor(self.split.images[i])
        boxes, labels = self.split.target(i)
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if self.flipped(i):
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return self.augmented(i, image, {"boxes": boxes, "labels": torch.as_tensor(labels, dtype=torch.int64)})


def _relative_boxes(entry: dict) -> list[tuple[int, list[float]]]:
    """(category id, [x0, y0, x1, y1] as fractions of the image): a resized copy's boxes compare with the original's."""
    w, h = entry["width"], entry["height"]
    return [(a["category_id"], [a["bbox"][0] / w, a["bbox"][1] / h, (a["bbox"][0] + a["bbox"][2]) / w,
                                (a["bbox"][1] + a["bbox"][3]) / h]) for a in entry["labels"]]


def _iou(p: list[float], q: list[float]) -> float:
    iw, ih = min(p[2], q[2]) - max(p[0], q[0]), min(p[3], q[3]) - max(p[1], q[1])
    inter = max(iw, 0) * max(ih, 0)
    union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
    return inter / union if union > 0 else 0.0


def box_conflict(a: dict, b: dict, min_iou: float) -> str | None:
    """Why two labellings of one picture disagree: box counts, a box without a match of IoU >= min_iou (greedy,
    best IoU first), or a matched box of another class; None when they agree."""
    pa, pb = _relative_boxes(a), _relative_boxes(b)
    if len(pa) != len(pb):
        return f"{len(pa)} boxes vs {len(pb)}"
    pairs = sorted(((_iou(p[1], q[1]), i, j) for i, p in enumerate(pa) for j, q in enumerate(pb)), reverse=True)
    used_a, used_b, worst, classes = set(), set(), 1.0, []
    for iou, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i), used_b.add(j)
        worst = min(worst, iou)
        if pa[i][0] != pb[j][0]:
            classes.append(f"class {pa[i][0]} vs {pb[j][0]}")
    if worst < min_iou:
        return f"box IoU {worst:.2f} < {min_iou}"
    return "; ".join(classes) or None


class Detection(Task):
    name = "detection"
    samples = TrainSet
    builders = "DETECTION_BUILDERS"  # learning/models.py
    correction_actions = ("relabel", "move", "delete", "add")
    layout = ("per split: images.npy uint8 [N,3,S,S]; boxes.npy float32 [M,4] xyxy in resized pixels; "
              "labels.npy int64 [M] category ids; offsets.npy int64 [N+1] (boxes of image i are "
              "offsets[i]:offsets[i+1]); image_ids.npy int64 [N]; scales.npy float32 [N,2] (sx, sy: resized = "
              "original * s)")
    plots = (PR_VAL,)

    def parse_labels(self, annotations, images, class_map, ann_path, problems, rejected, invalid=None):
        return parse_annotations(annotations, images, class_map, ann_path, problems, rejected, invalid)

    # fingerprint and defaults (tasks/sizing.py)
    def fingerprint_labels(self, files, class_map):
        return sizing.box_sizes(files, class_map)

    def resolution_need(self, fp):
        return sizing.box_need(fp)

    def model_defaults(self, fp, size, model):
        return sizing.anchor_scale(fp, size, model)

    # preprocess
    def preprocess_info(self) -> dict:
        return {}  # detection's preprocess.json keeps the bytes of releases made before tasks had names

    def write_split(self, out_dir, paths, by_path, size, root, params):
        import numpy as np

        from cvrepro.dataset.processed import SplitWriter

        cfg = typed(params)
        boxes_by_image = defaultdict(list)
        for ann in accepted_index(cfg, root)["annotations"]:
            if not ann.get("iscrowd", 0):  # crowd regions are for evaluation only
                boxes_by_image[ann["image_id"]].append(ann)
        writer = SplitWriter.for_params(out_dir, len(paths), size, cfg)
        offsets, boxes, labels = [0], [], []
        for i, entry in writer.images(paths, by_path, root):
            sx, sy = writer.scales[-1]
            for ann in boxes_by_image[entry["image_id"]]:
                x, y, w, h = ann["bbox"]
                boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
                labels.append(ann["category_id"])
            offsets.append(len(boxes))
        writer.close()
        np.save(out_dir / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        np.save(out_dir / "boxes.npy", np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))

    # train
    def build_model(self, model_cfg, num_classes, size, mean, std, class_ids, ignore_index):
        from cvrepro.learning.models import load_weights

        model = self.model_builders()[recorded(model_cfg, "name")](model_cfg, num_classes, size)
        # Pre/post-processing from params, set the same way on every architecture
        # (torchvision's builders take them under different names, or not at all).
        model.transform.image_mean = list(mean)
        model.transform.image_std = list(std)
        # model_cfg may be a predictor spec's record (JSON): its numbers as written, hence the casts
        model.score_thresh = float(recorded(model_cfg, "score_thresh", SCORE_THRESH))
        model.nms_thresh = float(recorded(model_cfg, "nms_thresh", NMS_THRESH))
        model.detections_per_img = int(recorded(model_cfg, "detections_per_img", DETECTIONS_PER_IMG))
        load_weights(model, model_cfg)
        return model

    def output_spec(self, params, base):
        boxes = "xyxy in input pixels; divide x by size/width and y by size/height for the original image"
        if base["input"].get("fit") == "letterbox":  # stretch keeps the text (the bytes of earlier releases)
            boxes = "xyxy in input pixels; divide by the letterbox scale (fitted size / original size per axis)"
        return {**base, "output": {
            "boxes": boxes,
            "labels": "category ids; see label_map.json",  # the thresholds as the spec's model records them:
            "score_thresh": recorded(base["model"], "score_thresh"),  # null when the config left them out
            "nms_thresh": recorded(base["model"], "nms_thresh")}}  # no "task" key: the bytes of earlier releases

    # predict
    def postprocess(self, out, input_shape, scale, class_names, score_threshold):
        sx, sy = scale
        found = []
        for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            if score < score_threshold or int(label) not in class_names:
                continue  # ids outside the class map are not classes (see known_labels_only)
            x1, y1, x2, y2 = box
            found.append({"box": [x1 / sx, y1 / sy, x2 / sx, y2 / sy], "score": float(score),
                          "label": int(label), "class_name": class_names[int(label)]})
        return found

    # cvrepro predict: COCO results, YOLO txt with confidences, and annotation sets CVAT imports as pre-annotations
    prediction_outputs = ("results", "yolo-txt", "coco", "voc", "yolo")

    def prediction_labels(self, prediction, width, height):
        """Boxes clipped to the image and rounded as importers round them, so that the annotation sets import
        back (`cvrepro import coco`) without an out-of-image box; a box rounded to no size is left out."""
        from cvrepro.dataset.index import tidy

        labels = []
        for d in prediction:
            x1, y1, x2, y2 = (min(max(float(v), 0.0), limit) for v, limit in zip(d["box"], (width, height) * 2))
            x, y, w, h = tidy(x1), tidy(y1), tidy(x2 - x1), tidy(y2 - y1)
            if w > 0 and h > 0 and x + w <= width and y + h <= height:
                labels.append({"category_id": d["label"], "bbox": [x, y, w, h], "area": tidy(w * h), "iscrowd": 0,
                               "score": round(d["score"], 6)})
        return labels

    # evaluate
    def evaluate_split(self, split, model, data, ctx):
        from cvrepro.learning.coco_metrics import slice_ids
        from cvrepro.learning.engine import predict
        from cvrepro.learning.pictures import detection_badness, grid_order, pr_curves_csv, prediction_grid

        ev, class_names, root = ctx["cfg"], ctx["class_names"], ctx["root"]
        if "coco" not in ctx:  # once for every split
            ctx["coco"] = accepted_index(ctx["params"], root)
            key = ev.slice_key
            ctx["slices"] = {key: slice_ids(ctx["coco"], key)} if key else {}
        preds = known_labels_only(predict(model, data.images, desc=f"predict {split}"), class_names)
        metrics, pr_curve = split_metrics(ctx["coco"], coco_detections(preds, data), data.image_ids.tolist(),
                                          class_names, ctx["slices"])
        if ctx["grid_path"] is not None:
            pr_curves_csv(pr_curve, root / PR_VAL)
            threshold = ev.grid_score_threshold
            gts = [dict(zip(("boxes", "labels"), data.target(i))) for i in range(len(data))]
            shown = grid_order([detection_badness(g, p, threshold) for g, p in zip(gts, preds)],
                               data.image_ids.tolist(), ev.grid_images)  # mistakes, lowest scores, sample
            if shown:
                prediction_grid([data.images[i].transpose(1, 2, 0) for i in shown], [gts[i] for i in shown],
                                [preds[i] for i in shown], class_names, ctx["grid_path"], score_threshold=threshold)
        return metrics

    # snapshot: duplicates
    def duplicate_conflict(self, a, b, dup):
        return box_conflict(a, b, dup.label_iou)

    # check
    def health_findings(self, manifest, index, check):
        from cvrepro.dataset.health import box_findings

        return box_findings(manifest["files"], index.get("annotations") or [], manifest["class_map"],
                            check)

    def label_signature(self, entry, labels):  # the boxes and classes, not the annotation ids
        return repr(sorted((a.get("category_id"), tuple(float(v) for v in a.get("bbox") or ())) for a in labels))

    # formats
    def serves(self, index):
        images, anns = index.get("images") or [], index.get("annotations") or []
        masks_only = bool(images) and all(isinstance(im, dict) and "mask_file" in im for im in images)
        return any(isinstance(a, dict) and "bbox" in a for a in anns) or (not anns and not masks_only)


register(Detection())
