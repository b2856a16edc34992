"""Reading `params.yaml`, the only config source stages use (so DVC tracks every value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cvrepro.core.fileio import CvreproError, canonical_json, sha256_bytes
from cvrepro.core.paths import PARAMS


def load_params(path: str | Path = PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CvreproError(f"{path}: not found; run `cvrepro compose` to compose it from conf/")
    with path.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise CvreproError(f"{path}: expected a mapping at the top level")
    return params


# Settings that change no model and no metric, outside the config ID: `check` (thresholds of `cvrepro check`,
# read by no stage) and `label_issues` (an analysis after evaluate), so tuning a dataset check or choosing
# `-S label_issues=kfold` neither renames a run nor makes its release differ from the same model's.
NOT_RUN_KEYS = ("check", "label_issues")


def plain(params: Any) -> dict[str, Any]:
    """A composition as a plain mapping: a typed `Params` (config/typed.py) as written, a mapping as is."""
    return params.as_dict() if hasattr(params, "as_dict") else params


def recorded(params: Any, dotted: str, default: Any = None) -> Any:
    """One value of a params.yaml *of another revision* (a release, a tag, a lineage record), which need not fit
    today's schema, so it is read as the mapping it is: `recorded(p, "model.name", "unknown")`. The config of
    this run is read typed (config/typed.py), never through this."""
    value: Any = plain(params)
    for part in dotted.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return default
        value = value[part]
    return value


def run_params(params: Any) -> dict[str, Any]:
    """The params a model and its metrics depend on: all but NOT_RUN_KEYS."""
    return {k: v for k, v in plain(params).items() if k not in NOT_RUN_KEYS}


def config_id(params: Any) -> str:
    """The experiment's name plus a short hash of the composed config (`run_params`).

    Two runs with the same config ID ran with identical parameters (NOT_RUN_KEYS aside).
    """
    name = (plain(params).get("experiment") or {}).get("name", "unnamed")
    return f"{name}+{sha256_bytes(canonical_json(run_params(params)).encode())[:8]}"


# --------------------------------------------------------------------------- defaults and choices
# The one place for the value code takes when a key is absent from a params dict (a library caller's partial
# dict; a composed params.yaml has every key) and for the values a key may take. conf/ holds the same defaults
# (tests/test_config_schema.py checks that they agree) and config/schema.py types every key with these.
IGNORE_INDEX = 255  # dataset.ignore_index: the mask value that is not scored (segmentation)
INVALID = "fail"  # dataset.invalid
DEVICE = "auto"  # train.device
PRECISION = "32"  # train.precision
DETERMINISTIC = True  # train.deterministic
CPU_ISA = "avx2"  # train.cpu_isa
PREFLIGHT = "warn"  # train.preflight
SPLIT_METHOD = "sha256"  # split.method
SCORE_THRESH = 0.05  # model.score_thresh (detectors)
NMS_THRESH = 0.6  # model.nms_thresh
DETECTIONS_PER_IMG = 50  # model.detections_per_img
ANCHOR_SCALE = 1.0  # model.anchor_scale (fcos_tiny)
DUPLICATES = {"near_threshold": 3, "label_iou": 0.95}  # dataset.duplicates (options imported before it existed)
CHECK = {  # conf/check/default.yaml, for params.yaml files composed before it existed
    "policy": "warn", "imbalance_ratio": 10.0, "tiny_box_area": 0.0005, "tiny_box_side": 2.0, "huge_box_area": 0.95,
    "aspect_max": 10.0, "boxes_per_image_iqr": 3.0, "near_identical_iou": 0.9, "max_items": 50, "sheet_items": 16,
}

REPRODUCE_TOLERANCE = 0.005  # evaluate.reproduce_tolerance
# evaluate.reproduce_tolerance_other_hardware, and what a tag from before the setting is judged by: the largest
# seed-to-seed spread measured on the demo (README, "Reproduce on other hardware")
OTHER_HARDWARE_TOLERANCE = {"default": 0.05, "AP75": 0.12}

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
CPU_ISAS = ("default", "avx2", "avx512", "native")
OPTIMIZERS = ("sgd", "adamw")
LABEL_ISSUE_MODES = ("heldout", "kfold")  # label_issues.mode and `cvrepro label-issues --mode`
POLICIES = ("warn", "strict")  # train.preflight and check.policy
INVALID_MODES = ("fail", "drop", "clip")  # what dataset.invalid does with a zero-size or out-of-image box
SPLIT_NAMES = ("train", "val", "test")
SPLIT_METHODS = ("sha256", "subset")
RESIZE_MODES = ("stretch", "letterbox")
STORES = ("npy", "png", "jpeg", "webp")
