"""The typed schema of params.yaml: one dataclass per config group of conf/, checked on every composition.

Why not Hydra's ConfigStore: `dvc exp run -S` composes conf/ inside DVC's own process, which never imports
cvrepro, so conf/ must compose without schema entries registered in the ConfigStore. The schema checks the
composed result instead (`validate`): `cvrepro compose`, and so the compose stage that `dvc exp run` runs
first, refuses an unknown key, a wrong type or an out-of-range value in one line naming the key and what it
takes, before any other stage runs. The values stay what conf/ composed: params.yaml is unchanged.

A field's type is its Python annotation; `key(...)` adds what the value may be (choices, bounds, length).
A field without a default must be present; a default is the value the code takes when the key is absent
(config/params.py holds those constants). A new model adds its dataclass to MODELS.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from cvrepro.config import params as P

REQUIRED = dataclasses.MISSING


def key(default: Any = REQUIRED, *, choices: tuple = (), ge=None, gt=None, le=None, length: int | None = None,
        factory=None) -> Any:
    """A schema field: its default (absent: required) and what its value, or each element of it, may be."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "length": length}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


UNIT = {"ge": 0, "le": 1}  # a probability, a fraction, an IoU
schema = dataclass(kw_only=True, frozen=True)  # read-only: the library never writes its config


# --------------------------------------------------------------------------- dataset, split, preprocess
@schema
class Duplicates:
    # dHash bits two copies may differ in (of 64); null: byte-identical copies only
    near_threshold: Optional[int] = key(P.DUPLICATES["near_threshold"], ge=0, le=32)  # as dataset/duplicates.py
    label_iou: float = key(P.DUPLICATES["label_iou"], gt=0, le=1)


@schema
class Dataset:
    name: str = key()
    task: Optional[str] = key(None)
    notes: str = key("")
    annotations: str = key("annotations.json")
    annotations_by_task: dict[str, str] = key(factory=dict)
    classes: Optional[list[str]] = key(None)  # written by `cvrepro import`
    ignore_index: int = key(P.IGNORE_INDEX, ge=1, le=255)
    invalid: str = key(P.INVALID, choices=P.INVALID_MODES)
    duplicates: Duplicates = key(factory=Duplicates)


@schema
class Split:
    method: str = key(P.SPLIT_METHOD, choices=P.SPLIT_METHODS)
    seed: Optional[int] = key()  # null: preflight's "seeds set" check reports it (strict refuses)
    ratios: dict[str, float] = key(ge=0, le=1)
    group_key: Optional[str] = key(None)


@schema
class Preprocess:
    size: int = key(ge=1)
    resize: str = key("stretch", choices=P.RESIZE_MODES)
    store: str = key("npy", choices=P.STORES)
    quality: int = key(90, ge=1, le=100)
    mean: list[float] = key(length=3)
    std: list[float] = key(gt=0, length=3)


# --------------------------------------------------------------------------- model: one schema a model name
@schema
class Model:
    """Every model: its name and how training starts (learning/models.py load_weights)."""
    name: str = key()
    weights: Optional[str] = key(None)  # a path or hub:<file>
    weights_backbone: Optional[str] = key(None)
    freeze: int = key(0, ge=0)


@schema
class Widths(Model):
    widths: list[int] = key(ge=1)


@schema
class Recalibrated(Model):
    bn_recalibration_batches: int = key(0, ge=0)


@schema
class Detector(Model):
    score_thresh: float = key(P.SCORE_THRESH, **UNIT)
    nms_thresh: float = key(P.NMS_THRESH, **UNIT)
    detections_per_img: int = key(P.DETECTIONS_PER_IMG, ge=1)


@schema
class FcosTiny(Detector):
    widths: list[int] = key(ge=1, length=4)
    fpn_channels: int = key(ge=1)
    anchor_scale: float = key(P.ANCHOR_SCALE, gt=0)


@schema
class Ssdlite(Detector, Recalibrated):
    pass


MODELS: dict[str, type] = {
    "fcos_tiny": FcosTiny, "fcos_resnet50_fpn": Detector, "ssdlite320_mobilenet_v3_large": Ssdlite,
    "unet_small": Widths, "lraspp_mobilenet_v3_large": Recalibrated, "deeplabv3_mobilenet_v3_large": Recalibrated,
    "cnn_small": Widths, "resnet18": Model,
}


# --------------------------------------------------------------------------- train, augment, evaluate, check
@schema
class Train:
    seed: Optional[int] = key()  # null: preflight's seeds check reports it; training refuses it in one line
    epochs: int = key(ge=1)
    batch_size: int = key(ge=1)
    optimizer: str = key(choices=P.OPTIMIZERS)
    lr: float = key(gt=0)
    momentum: float = key(0.9, **UNIT)
    weight_decay: float = key(ge=0)
    warmup_iters: int = key(ge=0)
    hflip: float = key(**UNIT)
    threads: int = key(ge=1)
    num_workers: int = key(0, ge=0)
    max_grad_norm: Optional[float] = key(None, ge=0)  # 0 or null: no clipping
    preflight: str = key(P.PREFLIGHT, choices=P.POLICIES)
    device: str = key(P.DEVICE, choices=P.DEVICES)
    precision: Union[str, int] = key(P.PRECISION, choices=P.PRECISIONS)  # -S train.precision=32 gives an int
    deterministic: bool = key(P.DETERMINISTIC)
    cpu_isa: str = key(P.CPU_ISA, choices=P.CPU_ISAS)
    devices: int = key(1, ge=1)
    num_nodes: int = key(1, ge=1)


@schema
class Color:
    brightness: float = key(0.0, ge=0)
    contrast: float = key(0.0, ge=0)
    saturation: float = key(0.0, ge=0)
    hue: float = key(0.0, ge=0, le=0.5)


@schema
class Augment:
    name: str = key()
    scale: Optional[list[float]] = key(None, gt=0, le=1, length=2)
    ratio: Optional[list[float]] = key(None, gt=0, length=2)
    vflip: float = key(0.0, **UNIT)
    color: Optional[Color] = key(None)


@schema
class Evaluate:
    splits: list[str] = key(choices=P.SPLIT_NAMES)
    slice_key: Optional[str] = key(None)
    latency_images: int = key(ge=0)
    grid_images: int = key(ge=0)
    grid_score_threshold: float = key(**UNIT)
    reproduce_tolerance: float = key(P.REPRODUCE_TOLERANCE, ge=0)
    reproduce_tolerance_other_hardware: dict[str, float] = key(factory=lambda: dict(P.OTHER_HARDWARE_TOLERANCE), ge=0)


@schema
class Experiment:
    name: str = key()
    description: str = key("")


@schema
class Check:
    policy: str = key(P.CHECK["policy"], choices=P.POLICIES)
    imbalance_ratio: float = key(P.CHECK["imbalance_ratio"], ge=1)
    tiny_box_area: float = key(P.CHECK["tiny_box_area"], **UNIT)
    tiny_box_side: float = key(P.CHECK["tiny_box_side"], ge=0)
    huge_box_area: float = key(P.CHECK["huge_box_area"], **UNIT)
    aspect_max: float = key(P.CHECK["aspect_max"], ge=1)
    boxes_per_image_iqr: float = key(P.CHECK["boxes_per_image_iqr"], ge=0)
    near_identical_iou: float = key(P.CHECK["near_identical_iou"], **UNIT)
    max_items: int = key(P.CHECK["max_items"], ge=0)
    sheet_items: int = key(P.CHECK["sheet_items"], ge=0)


@schema
class LabelIssuesDetection:
    match_iou: float = key(**UNIT)
    overlap_iou: float = key(**UNIT)
    missing_iou: float = key(**UNIT)
    missing_score: float = key(**UNIT)
    near: float = key(ge=0)
    size_ratio: float = key(ge=1)
    evidence: float = key(**UNIT)
    spurious_score: float = key(**UNIT)


@schema
class LabelIssues:
    mode: str = key(choices=P.LABEL_ISSUE_MODES)
    splits: list[str] = key(choices=("val", "test"))  # heldout judges: never what the model trained on
    k: int = key(ge=2)
    epochs: Optional[int] = key(None, ge=1)  # kfold: epochs per fold model (null: train.epochs)
    min_score: float = key(0.0, **UNIT)
    sheet_issues: int = key(ge=0)
    detection: LabelIssuesDetection = key()


@schema
class Params:
    """params.yaml: the composition of conf/config.yaml's defaults list. Built by `config.typed.typed` (or
    `load`), which keeps the composition as written for records (`as_dict`: config ID, checkpoint, lineage)."""
    dataset: Dataset = key()
    split: Split = key()
    preprocess: Preprocess = key()
    model: Model = key()  # the schema of model.name (MODELS)
    train: Train = key()
    augment: Augment = key()
    evaluate: Evaluate = key()
    task: str = key()
    experiment: Experiment = key()
    check: Check = key(factory=Check)  # `cvrepro check` only; params.yaml of older releases have none
    label_issues: Optional[LabelIssues] = key(None)  # the label_issues stage; older params.yaml have none

    def as_dict(self) -> dict[str, Any]:
        """The composition as params.yaml holds it (no defaults added): a copy, for records and hashes. A `Params`
        not built by config.typed (constructed directly, or by `dataclasses.replace`, which drops the composition:
        use `typed.override`) has none to give, and says so rather than recording its fields with defaults."""
        if "_raw" not in self.__dict__:
            raise TypeError("this Params has no composition to record (built without config.typed.typed, or by "
                            "dataclasses.replace): build it with config.typed.typed or typed.override")
        return copy.deepcopy(self.__dict__["_raw"])


# --------------------------------------------------------------------------- building
def build(value: dict, cls: type = None) -> Any:
    """The typed object of a mapping that `validate` passed: each group its dataclass (the model's by its name),
    absent keys their defaults; values as composed (checked, never changed). Lists and dicts are fresh copies."""
    cls = Params if cls is None else MODELS[value["name"]] if cls is Model else cls
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _build(value[f.name], hints[f.name]) for f in dataclasses.fields(cls) if f.name in value})


def _build(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        fit = next((a for a in inner if not _check("", value, a, {})), inner[0])
        return _build(value, fit)
    if dataclasses.is_dataclass(tp):
        return build(value, tp)
    if origin is list:
        return [_build(v, args[0]) for v in value]
    if origin is dict:
        return {k: _build(v, args[1]) for k, v in value.items()}
    return value  # as composed: an integer given for a number stays one (records written from it keep their bytes)


# --------------------------------------------------------------------------- validation
def validate(params: Any) -> list[str]:
    """One line per problem, `key: what it must be, got value`; empty when params fit the schema."""
    return _check_dataclass("", params, Params)


def _check_dataclass(path: str, value: Any, cls: type) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path or 'params'} must be a mapping of {', '.join(_names(cls))}, got {_short(value)}"]
    if cls is Model:
        cls = MODELS.get(value.get("name"), Model)
        if value.get("name") not in MODELS:
            return [f"{_join(path, 'name')} must be one of {', '.join(MODELS)}, got {value.get('name')!r}"]
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    problems = [f"{_join(path, k)} is not a key of {path or 'params'} (it takes: {', '.join(known)})"
                for k in value if k not in known]
    for name, f in known.items():
        where = _join(path, name)
        if name not in value:
            if f.default is REQUIRED and f.default_factory is REQUIRED:
                problems.append(f"{where} is missing ({_describe(hints[name], f.metadata)})")
            continue
        problems += _check(where, value[name], hints[name], f.metadata)
    return problems


def _check(path: str, value: Any, tp: Any, meta: dict) -> list[str]:
    """Problems of `value` against type `tp` and the bounds and choices of `meta` (which apply to elements)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        results = [_check(path, value, a, meta) for a in options]
        return [] if any(not r for r in results) else results[0] if len(options) == 1 else [_bad(path, value, tp, meta)]
    if dataclasses.is_dataclass(tp):
        return _check_dataclass(path, value, tp)
    if origin is list:
        if not isinstance(value, list) or (meta.get("length") and len(value) != meta["length"]):
            return [_bad(path, value, tp, meta)]
        return [p for i, v in enumerate(value) for p in _check(f"{path}[{i}]", v, args[0], meta)][:1]
    if origin is dict:
        if not isinstance(value, dict):
            return [_bad(path, value, tp, meta)]
        return [p for k, v in value.items() for p in _check(_join(path, str(k)), v, args[1], meta)]
    if not _is(value, tp) or not _fits(value, meta):
        return [_bad(path, value, tp, meta)]
    return []


def _is(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return tp is Any or isinstance(value, tp)


def _fits(value: Any, meta: dict) -> bool:
    if meta.get("choices") and str(value) not in meta["choices"]:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return not ((meta.get("ge") is not None and value < meta["ge"]) or
                    (meta.get("gt") is not None and value <= meta["gt"]) or
                    (meta.get("le") is not None and value > meta["le"]))
    return True


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(tp: Any, meta: dict) -> str:
    """What a value of `tp` under `meta` may be, in words: `a number > 0`, `one of auto, cpu, cuda, mps`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if meta.get("choices") and origin not in (list, dict):
        return "one of " + ", ".join(meta["choices"])
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a, meta) for a in inner)
        return text + " or null" if type(None) in args else text
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {', '.join(_names(tp))}"
    if origin is list:
        n = f"{meta['length']} " if meta.get("length") else ""
        return f"a list of {n}" + _plural(_describe(args[0], meta))
    if origin is dict:
        return "a mapping to " + _plural(_describe(args[1], meta))
    bounds = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if meta.get(k) is not None]
    return " ".join([TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))] + ([" and ".join(bounds)] if bounds else []))


def _plural(text: str) -> str:
    for one, many in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings")):
        if text.startswith(one):
            return many + text[len(one):]
    return text


def _bad(path: str, value: Any, tp: Any, meta: dict) -> str:
    return f"{path} must be {_describe(tp, meta)}, got {value!r}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def unknown_key(dotted: str) -> str | None:
    """`key is not a key of group (it takes: ...)` when the schema has no such key (Hydra's "Could not
    override"), else None."""
    cls: Any = Params
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return None
        names = _names(cls)
        if cls is Model and part not in names:
            return f"{dotted} is not a key of the selected model (its keys: conf/model/<option>.yaml)"
        if part not in names:
            where = ".".join(parts[:i]) or "params"
            return f"{dotted} is not a key of {where} (it takes: {', '.join(names)})"
        tp = typing.get_type_hints(cls)[part]
        cls = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
    return None
