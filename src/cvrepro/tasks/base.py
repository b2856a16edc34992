"""The interface every task implements: what the rest of the project may ask of a task.

A task is one object (an instance of a `Task` subclass) registered by name in
`cvrepro.tasks`. Nothing outside the tasks package compares task names: it asks the
registry for the task (`tasks.get(name)`, `tasks.of_params(params)`) and calls these
methods. The defaults here are the behaviour most tasks share; a task overrides what
differs. A new task (instance segmentation, keypoints) is one module with a subclass,
registered with `tasks.register`, plus one `conf/task/<name>.yaml`.

Each stage's use, in pipeline order:
- snapshot:   `annotations_required`, `labels_in_index`, `parse_labels`, `check_labels_on_disk`, `objects`,
              `label_entry`, `extra_stats`            (dataset/manifest.py)
              `fingerprint_labels`                    (dataset/fingerprint.py)
- defaults:   `resolution_need`, `model_defaults`    (tasks/defaults.py: settings chosen from the fingerprint)
- snapshot:   `duplicate_conflict` (do two copies of a picture carry the same labels; dataset/duplicates.py)
- split:      `split_summary`                         (stages/split.py)
- preprocess: `layout`, `write_split`, `preprocess_info` (dataset/processed.py)
- train:      `train_set`, `model_builders`, `build_model`, `output_spec` (learning/)
- predict:    `postprocess`                           (learning/predictor.py)
- `cvrepro predict`: `prediction_outputs`, `prediction_labels` (provenance/predict.py)
- evaluate:   `evaluate_split`, `plots`               (learning/evaluation.py)
- releases:   `correction_actions`, `label_change`    (dataset/corrections.py, dataset/diff.py)
- check:      `health_findings`, `label_signature`    (provenance/check.py: `cvrepro check`, dataset releases)
- formats:    `serves` (does an index hold this task's labels), `check_import`; each format
              plug-in names its task (formats/<name>/__init__.py: TASK).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvrepro.config.params import recorded
from cvrepro.config.schema import Check, Duplicates, Model
from cvrepro.config.typed import ParamsLike
from cvrepro.core.fileio import CvreproError, canonical_json, sha256_bytes
from cvrepro.core.problems import Problems


class Task:
    name: str = ""
    annotations_required = True  # does the index need an `annotations` list (segmentation: masks instead)
    labels_in_index = True  # all labels in the index file: snapshot may reuse its label side (dataset/labelcache.py)
    correction_actions: tuple[str, ...] = ()  # `cvrepro labels apply` actions this task's labels accept
    layout = ""  # what preprocess stores per split, for preprocess.json
    plots: tuple[Path, ...] = ()  # files under metrics/plots that only this task writes (besides the grid)
    samples: type | None = None  # the training samples: a learning.samples.SeededSamples subclass
    builders = ""  # the name of this task's {model.name: builder} table in learning/models.py

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # ----------------------------------------------------------------- snapshot
    def parse_labels(self, annotations: list, images: dict[int, dict], class_map: dict[int, str],
                     ann_path: Path, problems: Problems, rejected: set, invalid=None) -> dict[int, list[dict]]:
        """image id -> its labels (reduced annotations), checked; problems recorded, not raised.
        `invalid` (dataset.index.BoxCheck, from `dataset.invalid`): what to do with a bad box, for tasks with boxes."""
        return {}

    def check_labels_on_disk(self, files: list[dict], labels_dir: Path, ann_path: Path, class_map: dict[int, str],
                             ignore_index: int, problems: Problems) -> None:
        """Labels stored in files of their own (masks): read and check them, setting what `objects` needs."""

    def objects(self, f: dict, labels: list[dict], class_map: dict[int, str]) -> list[dict]:
        """The objects of one image, [{category_id, ...}]: what per-class statistics count."""
        return labels

    def label_entry(self, f: dict, labels: list[dict]) -> dict:
        """The task's fields of one image's manifest entry; `labels_hash` at least."""
        return {"labels_hash": sha256_bytes(canonical_json(labels).encode("utf-8")), "objects": len(labels)}

    def extra_stats(self, files: list[dict], class_map: dict[int, str], ignore_index: int) -> dict:
        return {}

    # ----------------------------------------------------------------- fingerprint and defaults
    def fingerprint_labels(self, files: list[dict], class_map: dict[int, str]) -> dict:
        """The task's keys of the dataset fingerprint (object sizes, mask areas): files as for `objects`."""
        return {}

    def resolution_need(self, fp: dict) -> list[tuple[float, int, str]]:
        """What the input size must resolve: [(object side / image long side, pixels it should get, why)];
        the largest size any of them wants is taken. [] when the labels say nothing of size (the images decide)."""
        return []

    def model_defaults(self, fp: dict, size: int, model: Model) -> list[tuple[str, object, str]]:
        """Model settings that depend on the data at input `size`: [(key under `model`, value, reason)];
        `model`: the config's model section (its class says which keys the selected model has)."""
        return []

    # ----------------------------------------------------------------- duplicates
    def duplicate_conflict(self, a: dict, b: dict, dup: Duplicates) -> str | None:
        """Why the labels of two copies of one picture disagree, or None if they agree. a, b: their manifest
        entries (path, width, height, labels_hash, ...) plus `labels`, the labels as `parse_labels` reduced them;
        dup: `dataset.duplicates` (label_iou). Default: any difference is a conflict."""
        same = a["labels_hash"] == b["labels_hash"] and (a["width"], a["height"]) == (b["width"], b["height"])
        return None if same else "labels differ"

    # ----------------------------------------------------------------- split
    def split_summary(self, manifest: dict, members: dict[str, list[str]], ratios: dict) -> dict:
        """Extra keys of splits.json (and warnings on stderr) for this task."""
        return {}

    # ----------------------------------------------------------------- preprocess
    def write_split(self, out_dir: Path, paths: list[str], by_path: dict, size: int, root: Path,
                    params: ParamsLike) -> None:
        """One split's processed arrays under out_dir; `params`: the config (`typed(params)` reads it)."""
        raise NotImplementedError

    def preprocess_info(self) -> dict:
        """Keys preprocess.json adds for this task."""
        return {"task": self.name}

    # ----------------------------------------------------------------- train
    def train_set(self, split, seed: int, hflip: float, augment: dict | None = None):
        """The training samples (`samples`): seeded flip (`train.hflip`), then `augment` (learning/augment.py)."""
        if self.samples is None:
            raise NotImplementedError(f"{self!r} names no training samples")
        return self.samples(split, seed, hflip, augment)

    def model_builders(self) -> dict[str, Any]:
        """model.name -> builder(model_cfg, num_classes, size) for this task's models (`builders`)."""
        from cvrepro.learning import models

        return getattr(models, self.builders)

    def build_model(self, model_cfg, num_classes: int, size: int, mean: list[float], std: list[float],
                    class_ids: list[int] | None, ignore_index: int):
        raise NotImplementedError

    def dense_model(self, model_cfg, num_classes: int, output: str, valid: list[int], mean: list[float],
                    std: list[float], ignore_index: int):
        """`build_model` of a task whose network gives scores per class (per image or per pixel): the network
        wrapped in learning.models.DenseTask (normalisation inside, `output` key, ids outside `valid` masked).
        model_cfg: a predictor spec's `model` record (JSON, perhaps of an older release), handed as is to
        learning's builder."""
        from cvrepro.learning.models import DenseTask, load_weights

        builder = self.model_builders()[recorded(model_cfg, "name")]
        model = DenseTask(builder(model_cfg, num_classes), output, valid, mean, std, ignore_index)
        load_weights(model.net, model_cfg)
        return model

    def output_spec(self, params: ParamsLike, base: dict) -> dict:
        """The predictor spec (models/preprocessing.json) from the shared `base` (model, num_classes, input)."""
        return {"task": self.name, **base}

    # ----------------------------------------------------------------- predict
    def postprocess(self, out: dict, input_shape: tuple[int, int], scale: tuple[float, float],
                    class_names: dict[int, str], score_threshold: float) -> Any:
        """One model output -> the public prediction in original-image coordinates. input_shape: the
        (height, width) of the input the image fills (less than size x size when letterboxed); scale: the
        (sx, sy) with input pixel = original pixel * s."""
        raise NotImplementedError

    # ----------------------------------------------------------------- cvrepro predict
    # What `cvrepro predict` can write for this task (provenance/predict.py: "results", "yolo-txt", "csv", or a
    # format plug-in's name); empty: the task is not supported by `cvrepro predict` yet.
    prediction_outputs: tuple[str, ...] = ()

    def prediction_labels(self, prediction: Any, width: int, height: int) -> list[dict]:
        """One image's prediction (`postprocess`'s form) as annotations of the labels index, each with a `score`:
        what `cvrepro predict` writes as results and as annotation sets (width x height: the displayed image)."""
        raise CvreproError(f"cvrepro predict does not support the {self.name} task yet")

    # ----------------------------------------------------------------- evaluate
    def evaluate_split(self, split: str, model, data, ctx: dict) -> dict:
        """Metrics of one split. ctx: root, params (the typed config), cfg (its `evaluate` section), manifest, class_names, spec, grid_path (write the prediction grid there when not None), plots_dir."""
        raise NotImplementedError

    # ----------------------------------------------------------------- releases
    def corrections_refused(self, labels_path: Path) -> str | None:
        """Why `cvrepro labels apply` cannot edit this task's labels, or None if it can (`correction_actions`)."""
        return None

    def label_change(self, old, new, old_entry: dict, new_entry: dict, old_labels: list[dict],
                     new_labels: list[dict]) -> tuple[str, dict]:
        """How one image's labels changed between two dataset versions: ("labels", counts of added/removed/
        moved/relabelled) or ("mask", {changed_pixels}). Added labels need a minor bump, the rest a patch."""
        from cvrepro.dataset.diff import label_counts

        return "labels", label_counts(old_labels, new_labels)

    # ----------------------------------------------------------------- check
    def health_findings(self, manifest: dict, index: dict, check: Check) -> dict[str, dict]:
        """This task's own `cvrepro check` findings ({name: dataset.health.finding(...)}; detection: the box
        checks). `index`: the labels index; `check`: the typed `check` section.
        What every task shares (class balance, unlabelled images, duplicates, leakage, label conflicts) is computed
        outside the task."""
        return {}

    def label_signature(self, entry: dict, labels: list[dict]) -> str:
        """What two copies of one picture must share for their labels to agree (two exact copies whose
        signatures differ are a label conflict). `entry`: the manifest entry; `labels`: its labels in the index."""
        return str(entry.get("labels_hash", ""))

    # ----------------------------------------------------------------- formats
    def serves(self, index: dict) -> bool:
        """Does a labels index hold this task's labels?"""
        return False

    def check_import(self, images: list[dict], labels_by_image: dict[int, list[dict]], where: dict[int, str]) -> None:
        """Layout checks of an imported dataset beyond what snapshot checks (CvreproError on the first)."""
