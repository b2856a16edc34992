"""Small photo-like images and a COCO detection dataset of them, for the duplicate tests."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth gradient with a few flat blocks and some grain: distinct seeds give distinct pictures."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    base = (np.cos(angle) * x / w + np.sin(angle) * y / h) * 160 + rng.uniform(0, 60)
    pixels = np.repeat(base[..., None], 3, axis=2) + rng.uniform(-40, 40, 3)
    for _ in range(4):
        bw, bh = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 6, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        pixels[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_dataset(root: Path, images: dict[str, bytes], boxes: dict[str, list] | None = None) -> None:
    """data/raw/<name> for each image and data/labels/annotations.json: one class, `boxes[name]` (default one box
    [4, 4, 20, 16]) as [x, y, w, h, category_id]."""
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    entries, anns = [], []
    for i, (name, data) in enumerate(sorted(images.items()), start=1):
        (raw / name).write_bytes(data)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        entries.append({"id": i, "file_name": name, "width": w, "height": h})
        for x, y, bw, bh, cat in (boxes or {}).get(name, [[4, 4, 20, 16, 1]]):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0})
    labels = root / "data" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "annotations.json").write_text(json.dumps(
        {"images": entries, "annotations": anns,
         "categories": [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "cat"}]}))
