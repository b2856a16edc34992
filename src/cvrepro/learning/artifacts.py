"""The trained model as files: weights (a state dict), the predictor spec (models/preprocessing.json:
task, model config, input transform, output meaning), the label map; saving and loading them."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from cvrepro import tasks
from cvrepro.config.params import IGNORE_INDEX
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import atomic_write_bytes, read_json
from cvrepro.core.paths import LABEL_MAP, PREPROCESSING, WEIGHTS
from cvrepro.learning.models import architecture_only

INPUT_RESIZE = "stretch to size x size, bilinear"
INPUT_LETTERBOX = "longer side to size, bilinear, aspect ratio kept, zero padding bottom and right"


def save_torch(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def predictor_spec(params: ParamsLike, class_map: dict[str, str]) -> dict:
    """Everything a predictor needs besides the weights, bundled with the artifact."""
    cfg = typed(params)
    written = cfg.as_dict()  # recorded values as params.yaml writes them (an int stays an int): the spec's bytes
    pre = cfg.preprocess
    base = {
        "model": written["model"],
        "num_classes": max(int(k) for k in class_map) + 1,
        "input": {"size": pre.size, "resize": INPUT_RESIZE, "color": "RGB",
                  "scale": "uint8 / 255", "mean": written["preprocess"]["mean"], "std": written["preprocess"]["std"]},
    }
    if pre.resize != "stretch":  # stretch: no key, the bytes of earlier releases
        base["input"].update(resize=INPUT_LETTERBOX, fit=pre.resize)
    return tasks.get(cfg.task).output_spec(cfg, base)


def build_from_spec(spec: dict, size: int, class_map: dict[str, str], mean: list[float] | None = None,
                    std: list[float] | None = None) -> torch.nn.Module:
    inp = spec["input"]
    task = tasks.of_record(spec, str(PREPROCESSING))
    return tasks.build_model(spec["model"], spec["num_classes"], size, mean or inp["mean"], std or inp["std"],
                       task=task.name, class_ids=[int(k) for k in class_map],
                       ignore_index=spec.get("ignore_index", IGNORE_INDEX))


def load_predictor(models_dir: Path, device=None):
    """The trained model in eval mode on `device` (a torch.device; default the CPU), with its
    preprocessing spec and label map."""
    models_dir = Path(models_dir)
    spec = read_json(models_dir / PREPROCESSING.name)
    label_map = read_json(models_dir / LABEL_MAP.name)
    # the architecture alone: the pretrained files training started from are not needed (nor loaded)
    model = build_from_spec({**spec, "model": architecture_only(spec["model"])}, spec["input"]["size"], label_map)
    model.load_state_dict(torch.load(models_dir / WEIGHTS.name, map_location="cpu", weights_only=True))
    if device is not None:
        model.to(device)
    model.eval()
    return model, spec, label_map
