"""Helpers of tests/test_predict.py: a model folder as the trainer writes it (untrained: no training needed),
and folders of images, one of them broken."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import tiny_params

CLASS_MAP = {"1": "person", "2": "cart", "3": "shelf"}


def untrained_models(dest: Path, overrides: list[str] | None = None, seed: int = 0) -> Path:
    """dest/ with model.pt, preprocessing.json and label_map.json, the files `cvrepro train` writes into models/,
    of a seeded, untrained model of the tiny config (`overrides`: another task or model)."""
    import torch

    from cvrepro.core.fileio import write_json
    from cvrepro.learning.artifacts import build_from_spec, predictor_spec, save_torch

    params = tiny_params(overrides=overrides)
    spec = predictor_spec(params, CLASS_MAP)
    torch.manual_seed(seed)
    model = build_from_spec(spec, spec["input"]["size"], CLASS_MAP)
    dest.mkdir(parents=True, exist_ok=True)
    save_torch(model.state_dict(), dest / "model.pt")
    write_json(dest / "label_map.json", CLASS_MAP)
    write_json(dest / "preprocessing.json", spec)
    return dest


def image_folder(dest: Path, n: int = 3, broken: bool = True) -> Path:
    """n small seeded pictures (PNG and JPEG, one in a subfolder), a text file that is not an image, and with
    `broken` a truncated JPEG `bad.jpg`."""
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)
        name = f"sub/img_{i}.jpg" if i == 1 else f"img_{i}.png"
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(dest / name)
    (dest / "notes.txt").write_text("not an image\n")
    if broken:
        (dest / "bad.jpg").write_bytes((dest / "sub/img_1.jpg").read_bytes()[:200])
    return dest
