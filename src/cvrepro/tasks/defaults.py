"""Defaults chosen from the dataset fingerprint (nnU-Net's self-configuration idea, kept small): how to
resize (stretch or letterbox), to what size, how to store the result, the detector settings that depend on
object size, and a pretrained backbone when torch's hub cache holds one that fits and the data is small;
all within a compute budget.

They are written to `conf/fingerprint/<dataset>.yaml`, each value with its reason as a YAML comment. The
defaults list of conf/config.yaml holds `optional fingerprint: ${dataset}` after the task: the file applies
exactly when its dataset is selected (switch to another dataset and it no longer does), over the group and
task defaults, under experiments and `-S` overrides. The demo has no such file: its composition is unchanged.
Nothing here runs in the pipeline; `cvrepro fingerprint --write` and `cvrepro import` write the file.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import yaml

from cvrepro.config.schema import Model
from cvrepro.config.options import CONF_FINGERPRINT, FINGERPRINT_GENERATED as GENERATED
from cvrepro.core.fileio import CvreproError, atomic_write_text

MIN_SIZE = 64
NO_OBJECT_SIZE = 224  # px: what ImageNet classifiers see; no labels say a larger input is needed
CPU_IMAGES = 3000  # "a few thousand images in minutes on a laptop CPU" at the cpu budget's largest side
BUDGETS = {  # name -> (largest input side, pixels an epoch: images x side x side)
    "cpu": (320, CPU_IMAGES * 320 * 320),
    "gpu": (1024, 100_000 * 640 * 640),
}
NUMBER_MAX_SIDE = 1024  # a budget given as a number of pixels an epoch: the largest side still 1024
NPY_LIMIT = 2 * 1024 ** 3  # bytes of raw uint8 arrays above which the images are stored as JPEG (a tenth)
SMALL_DATA = 5000  # images: below this a pretrained backbone is worth more than training from scratch
HUB_BACKBONES = {  # model.name -> (file name prefix in the hub cache, model.freeze)
    "fcos_resnet50_fpn": ("resnet50-", 5),
    "ssdlite320_mobilenet_v3_large": ("mobilenet_v3_large-", 0),
    "lraspp_mobilenet_v3_large": ("mobilenet_v3_large-", 0),
    "deeplabv3_mobilenet_v3_large": ("mobilenet_v3_large-", 0),
    "resnet18": ("resnet18-", 5),
}


def parse_budget(value: str | int) -> tuple[int, int, str]:
    """(largest side, pixels an epoch, label) from `cpu`, `gpu` or a number of pixels an epoch."""
    text = str(value).strip().lower()
    if text in BUDGETS:
        return (*BUDGETS[text], text)
    try:
        pixels = int(float(text))
    except ValueError:
        pixels = 0
    if pixels < MIN_SIZE * MIN_SIZE:
        raise CvreproError(f"--budget {value!r}: use cpu, gpu or a number of pixels an epoch "
                           f"(images x side x side, at least {MIN_SIZE * MIN_SIZE})")
    return NUMBER_MAX_SIDE, pixels, f"{pixels} pixels an epoch"


def _up32(v: float) -> int:
    return int(math.ceil(v / 32) * 32)


def _down32(v: float) -> int:
    return max(MIN_SIZE, int(v // 32) * 32)


def choose_size(fp: dict, task, budget) -> tuple[int, str]:
    """The input side: the largest the task's needs want (small objects, detail of the median object), at most
    the images' own size (upscaling adds no detail) and the budget's cap."""
    max_side, pixels, label = parse_budget(budget)
    images = fp["images"]["count"] or 1
    long_p95 = fp["images"]["long_side"].get("p95") or MIN_SIZE
    needs = [(target / max(rel, 1e-6), why) for rel, target, why in task.resolution_need(fp)]
    if not needs:
        needs = [(min(NO_OBJECT_SIZE, fp["images"]["long_side"].get("p50") or MIN_SIZE),
                  f"no object sizes: the images' median longer side, at most {NO_OBJECT_SIZE}")]
    wanted, why = max(needs)
    size = max(MIN_SIZE, min(_up32(wanted), _up32(long_p95)))
    reasons = [f"{why}: wants {wanted:.0f} px"]
    if _up32(wanted) > _up32(long_p95):
        reasons.append(f"the images' p95 longer side is {long_p95:.0f} px (no upscaling)")
    if size == MIN_SIZE and min(_up32(wanted), _up32(long_p95)) < MIN_SIZE:
        reasons.append(f"at least {MIN_SIZE}")
    cap = min(max_side, _down32(math.sqrt(pixels / images)))
    if size > cap:
        size = cap
        reasons.append(f"budget {label} caps it at {cap} for {images} images (what wants more gets less detail)")
    return size, "; ".join(reasons)


def choose_resize(fp: dict) -> tuple[str, str]:
    aspect = fp["images"]["aspect"]
    lo, hi = aspect.get("p5", 1.0), aspect.get("p95", 1.0)
    if lo < 0.95 or hi > 1.05:
        return "letterbox", f"images are not square (width/height p5 {lo}, p95 {hi}): stretching distorts shapes"
    return "stretch", f"images are square (width/height p5 {lo}, p95 {hi}): nothing to keep, no padding"


def choose_store(fp: dict, size: int) -> tuple[str, str]:
    raw = fp["images"]["count"] * size * size * 3
    if raw > NPY_LIMIT:
        return "jpeg", f"raw arrays would take {raw / 1024 ** 3:.1f} GiB; JPEG 90 takes about a tenth"
    return "npy", f"raw arrays take {raw / 1024 ** 2:.1f} MiB: memory-mapped, exact, fastest"


def hub_files() -> list[str]:
    """File names in torch's hub cache (`model.weights_backbone: hub:<file>`); never downloads."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []


def choose_pretrained(fp: dict, model: Model, files: list[str]) -> tuple[list, list[str]]:
    """([(key, value, reason)], hint lines): the backbone for the selected model if the hub cache holds it and
    the data is small; otherwise a hint naming a model the cache has weights for."""
    images = fp["images"]["count"]
    name = model.name
    prefix, freeze = HUB_BACKBONES.get(name, (None, 0))
    found = [f for f in files if prefix and f.startswith(prefix)]
    if found and images <= SMALL_DATA and not model.weights_backbone:
        why = f"{images} images (<= {SMALL_DATA}): start from the hub cache's {found[0]}"
        return [("weights_backbone", f"hub:{found[0]}", why),
                ("freeze", freeze, "the first blocks keep their pretrained filters")], []
    hints = [f"# the hub cache holds {f}: for a pretrained {m}, -S model={_option(m)} -S model.weights_backbone=hub:{f}"
             for m, (p, _) in HUB_BACKBONES.items() if m != name for f in files if f.startswith(p)]
    return [], hints[:3]


def _option(model_name: str) -> str:
    """The conf/model option of a model name (the file names differ from torchvision's for a few)."""
    return {"ssdlite320_mobilenet_v3_large": "ssdlite", "lraspp_mobilenet_v3_large": "lraspp",
            "deeplabv3_mobilenet_v3_large": "deeplabv3"}.get(model_name, model_name)


def choose(fp: dict, task, model: Model, budget="cpu", hub: list[str] | None = None) -> dict:
    """{group: [(key, value, reason)]} and hint lines: the defaults for this fingerprint. model: the config's
    model section (the selected model: which keys it has, whether it starts from pretrained weights)."""
    size, size_why = choose_size(fp, task, budget)
    resize, store = choose_resize(fp), choose_store(fp, size)
    chosen = task.model_defaults(fp, size, model)
    pretrained, hints = choose_pretrained(fp, model, hub_files() if hub is None else hub)
    return {"preprocess": [("resize", resize[0], resize[1]), ("size", size, size_why), ("store", store[0], store[1])],
            "model": chosen + pretrained, "hints": hints, "budget": parse_budget(budget)[2]}


def render(name: str, chosen: dict) -> str:
    """The option file: `key: value  # reason`, one a line."""
    lines = [f"{GENERATED} --write` or `cvrepro import` (budget {chosen['budget']}) from the labels of "
             f"dataset '{name}'.",
             "# Applied whenever dataset '" + name + "' is selected, after the task's defaults; experiments and",
             "# `-S key=value` still win. Rerun after the data changes; delete this file to use the group defaults.",
             *chosen["hints"]]
    for group in ("preprocess", "model"):
        if chosen[group]:
            lines.append(f"{group}:")
            lines += [f"  {key}: {_scalar(value)}  # {reason}" for key, value, reason in chosen[group]]
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def selected_dataset(root: Path) -> str:
    """The dataset option selected in conf/config.yaml's defaults list."""
    config = Path(root) / "conf/config.yaml"
    found = re.search(r"^\s*-\s*dataset\s*:\s*([^\s#]+)", config.read_text(), re.MULTILINE)
    if not found:
        raise CvreproError(f"{config}: no `- dataset: ...` line in the defaults list")
    return found.group(1)


def compute(root: Path, dataset_name: str | None = None, budget="cpu") -> tuple[str, dict, dict, str]:
    """(dataset name, fingerprint, chosen defaults, option text) of a dataset option of the project at root."""
    from cvrepro import tasks
    from cvrepro.config.compose import compose
    from cvrepro.dataset.fingerprint import from_index
    from cvrepro.config.typed import typed
    from cvrepro.dataset.index import annotations_file

    root = Path(root)
    name = dataset_name or selected_dataset(root)
    parse_budget(budget)  # a bad budget fails before the labels are read
    written = (root / CONF_FINGERPRINT / f"{name}.yaml").exists()  # chosen afresh, not from the last choice:
    cfg = typed(compose(root / "conf", [f"dataset={name}"] + (["~fingerprint"] if written else [])))
    task = tasks.of_params(cfg)
    fp = from_index(root / annotations_file(cfg), task, cfg.dataset.invalid, cfg.dataset.ignore_index)
    chosen = choose(fp, task, cfg.model, budget)
    return name, fp, chosen, render(name, chosen)


def write_dataset_defaults(root: Path = Path("."), dataset_name: str | None = None, budget="cpu",
                           select: bool = True) -> dict:
    """Fingerprint the dataset and write conf/fingerprint/<name>.yaml (select: and recompose params.yaml, as
    `cvrepro import` does for its dataset option); select False computes and writes nothing. A file there not
    written by this command is refused, not replaced."""
    root = Path(root)
    name, fp, chosen, text = compute(root, dataset_name, budget)
    option = root / CONF_FINGERPRINT / f"{name}.yaml"
    summary = {"dataset": name, "fingerprint": fp, "option": str(CONF_FINGERPRINT / f"{name}.yaml"),
               "chosen": {g: {k: v for k, v, _ in chosen[g]} for g in ("preprocess", "model")}, "written": False}
    if not select:
        return summary
    if option.exists() and not option.read_text().startswith(GENERATED):
        raise CvreproError(f"{option}: exists and was not written by `cvrepro fingerprint`; edit or remove it")
    option.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(option, text)
    from cvrepro.config.compose import write_params

    write_params(root, log=lambda line: print(line, file=sys.stderr))
    return {**summary, "written": True}
