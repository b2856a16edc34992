"""Image classification: one label per image (docs/label-formats.md).

Labels: exactly one `{id, image_id, category_id}` annotation per image, no box. The split
records the images per class in every split; evaluation reports accuracy, macro F1 and a
confusion CSV for DVC's confusion plot.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from cvrepro.config.schema import Evaluate
from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError, canonical_json, sha256_bytes
from cvrepro.core.paths import PLOTS_DIR
from cvrepro.core.problems import Problems
from cvrepro.dataset.index import checked_annotations
from cvrepro.dataset.manifest import slice_values
from cvrepro.tasks import register
from cvrepro.tasks.base import Task
from cvrepro.learning.samples import SeededSamples

CONFUSION_VAL = PLOTS_DIR / "confusion_val.csv"
CONFUSION_PNG = PLOTS_DIR / "confusion_val.png"  # the same matrix with counts, for people


def parse_classification(
    annotations: list,
    images: dict[int, dict],
    class_map: dict[int, str],
    ann_path: Path,
    problems: Problems,
    rejected: set,
) -> dict[int, list[dict]]:
    """image id → [{id, category_id}]: exactly one image-level label per image (no bbox needed)."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    required = ("id", "image_id", "category_id")
    for _, a, image in checked_annotations(annotations, required, images, class_map, ann_path, problems, rejected):
        by_image[image["id"]].append({"id": a["id"], "category_id": a["category_id"]})
    for iid in sorted(images):
        labels = by_image.get(iid, [])
        if len(labels) != 1:
            ids = ", ".join(str(a["id"]) for a in labels) or "none"
            problems.add(f"{ann_path}: image id {iid} ({images[iid]['path']}): a classification image needs exactly "
                         f"one label in 'annotations', found {len(labels)} (annotation ids: {ids})")
    return by_image


def class_counts(manifest: dict, members: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Images per class name in each split (classification manifests carry each image's category_id)."""
    class_of = {f["path"]: manifest["class_map"][str(f["category_id"])] for f in manifest["files"]}
    out = {}
    for name, paths in members.items():
        counts = Counter({c: 0 for c in manifest["class_map"].values()})
        counts.update(class_of[p] for p in paths)
        out[name] = dict(counts)
    return out


class LabelTrainSet(SeededSamples):
    """Classification samples: the image (seeded flip, then the `augment` transforms, all drawn from
    (seed, epoch, index)) and its category id."""

    def __getitem__(self, i: int):
        import torch

        from cvrepro.learning.engine import to_tensor

        image = to_tensor(self.split.images[i])
        if self.flipped(i):
            image = image.flip(-1)
        return self.augmented(i, image, {"label": torch.tensor(int(self.split.labels[i]))})


class Classification(Task):
    name = "classification"
    samples = LabelTrainSet
    builders = "CLASSIFICATION_BUILDERS"  # learning/models.py
    correction_actions = ("relabel",)
    layout = ("per split: images.npy uint8 [N,3,S,S]; labels.npy int64 [N] category id per image; "
              "image_ids.npy int64 [N]; scales.npy float32 [N,2]")
    plots = (CONFUSION_VAL, CONFUSION_PNG)

    def parse_labels(self, annotations, images, class_map, ann_path, problems, rejected, invalid=None):
        return parse_classification(annotations, images, class_map, ann_path, problems, rejected)

    def label_entry(self, f, labels):
        (label,) = labels
        return {"objects": 1, "category_id": label["category_id"],
                "labels_hash": sha256_bytes(canonical_json(label).encode("utf-8"))}

    def label_signature(self, entry, labels):  # the class, not the annotation id
        return str(entry.get("category_id"))

    # split
    def split_summary(self, manifest, members, ratios):
        counts = class_counts(manifest, members)
        for name, per_class in counts.items():
            empty = [c for c, n in per_class.items() if n == 0]
            if empty and ratios[name] > 0:
                print(f"warning: split {name} holds no image of class {', '.join(empty)}", file=sys.stderr)
        return {"class_counts": counts}

    # preprocess
    def write_split(self, out_dir, paths, by_path, size, root, params):
        import numpy as np

        from cvrepro.dataset.processed import SplitWriter

        writer = SplitWriter.for_params(out_dir, len(paths), size, typed(params))
        labels = [entry["category_id"] for _i, entry in writer.images(paths, by_path, root)]
        writer.close()
        np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))

    # train
    def build_model(self, model_cfg, num_classes, size, mean, std, class_ids, ignore_index):
        valid = sorted(set(class_ids if class_ids is not None else range(1, num_classes)))
        return self.dense_model(model_cfg, num_classes, "label", valid, mean, std, ignore_index)

    def output_spec(self, params, base):
        return {"task": self.name, **base, "ignore_index": typed(params).dataset.ignore_index,
                "output": {"label": "category id; see label_map.json", "scores": "[K] softmax over ids 0..K-1"}}

    # predict
    def postprocess(self, out, input_shape, scale, class_names, score_threshold):
        probs = out["scores"].tolist()
        label = int(out["label"])
        return {"label": label, "class_name": class_names.get(label, str(label)), "score": probs[label],
                "scores": {name: probs[i] for i, name in class_names.items() if i < len(probs)}}

    # cvrepro predict: one label per image, as results, a CSV and an ImageFolder tree
    prediction_outputs = ("results", "csv", "imagefolder")

    def prediction_labels(self, prediction, width, height):
        return [{"category_id": prediction["label"], "score": round(prediction["score"], 6)}]

    # evaluate
    def evaluate_split(self, split, model, data, ctx):
        from cvrepro.learning.confusion_metrics import classification_scores, confusion
        from cvrepro.learning.engine import predict_batches
        from cvrepro.learning.pictures import classification_badness, confusion_csv, confusion_png, grid_order, label_grid

        ev: Evaluate = ctx["cfg"]
        class_names, slice_key, k = ctx["class_names"], ev.slice_key, int(ctx["spec"]["num_classes"])
        predicted, top = [], []
        for _start, outs in predict_batches(model, data.images, desc=f"predict {split}"):
            for out in outs:
                predicted.append(int(out["label"]))
                top.append(float(out["scores"].max()))
        actual = [int(v) for v in data.labels]
        metrics = classification_scores(confusion(actual, predicted, k), class_names)
        if slice_key:
            slice_of = slice_values(ctx["manifest"], slice_key)
            groups: dict[str, list[int]] = defaultdict(list)
            for i, image_id in enumerate(data.image_ids.tolist()):
                if image_id in slice_of:
                    groups[slice_of[image_id]].append(i)
            metrics[slice_key] = {
                value: {"images": len(idx), "accuracy": classification_scores(
                    confusion([actual[i] for i in idx], [predicted[i] for i in idx], k), class_names)["accuracy"]}
                for value, idx in sorted(groups.items())
            }
        if ctx["grid_path"] is not None:
            rows = sorted((int(i), class_names[a], class_names.get(p, str(p)))
                          for i, a, p in zip(data.image_ids.tolist(), actual, predicted))
            confusion_csv(rows, ctx["root"] / CONFUSION_VAL)
            confusion_png(confusion(actual, predicted, k), {0: "-", **class_names}, ctx["root"] / CONFUSION_PNG,
                          f"{split} confusion")
            shown = grid_order([classification_badness(a, p, s) for a, p, s in zip(actual, predicted, top)],
                               data.image_ids.tolist(), ev.grid_images)
            if shown:  # mistakes first, then the least confident, then a sample
                label_grid([data.images[i].transpose(1, 2, 0) for i in shown], [actual[i] for i in shown],
                           [predicted[i] for i in shown], [top[i] for i in shown], class_names, ctx["grid_path"])
        return metrics

    # snapshot: duplicates
    def duplicate_conflict(self, a, b, dup):
        ca, cb = a.get("category_id"), b.get("category_id")
        return None if ca == cb else f"class {ca} vs {cb}"

    # formats
    def serves(self, index):
        anns = index.get("annotations") or []
        return bool(anns) and not any(isinstance(a, dict) and "bbox" in a for a in anns)

    def check_import(self, images, labels_by_image, where):
        for im in images:
            n = len(labels_by_image.get(im["id"], []))
            if n != 1:
                raise CvreproError(f"image id {im['id']} ({where[im['id']]}): has {n} labels; classification needs one")


register(Classification())
