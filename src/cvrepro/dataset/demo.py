"""The demo dataset: a small, deterministic, synthetic set to run the pipeline on, for every task.

One run lays down, under data/raw and data/labels:
  detection + segmentation: scenes `img_*.png` with boxes in `annotations.json` and, on each
    image entry, a `mask_file` (`masks/img_*.png`: class id per pixel, 0 background);
  classification: single-object images `classification/cls_*.png` indexed by
    `classification.json` (one label per image, no box).

Three classes drawn as clearly different shapes and colours on textured backgrounds,
so a tiny detector trained from scratch learns them in a few epochs:
  person: round head over a tall narrow body and two legs (red shirt)
  cart:   wide blue mesh basket on two dark wheels
  shelf:  ochre frame with dark horizontal boards
A fraction of images are "night" (darker and noisier) so evaluation has a slice to report.

Image i depends only on (seed, i), never on N: growing N appends images and leaves the
earlier files byte-identical, so dataset versions grow the way real ones do.
"""

from __future__ import annotations

import shutil
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from cvrepro.core import paths
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, write_json

GENERATOR_VERSION = 1  # bump when the pictures change for the same seed
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "demo"},
    {"id": 2, "name": "cart", "supercategory": "demo"},
    {"id": 3, "name": "shelf", "supercategory": "demo"},
]
MIN_SIDE, MAX_SIDE = 14, 60  # long side of an object, pixels
MAX_OBJECTS = 4
MAX_OVERLAP = 0.3  # intersection over the smaller box: keeps IoU < 0.3 and no object hidden
PLACEMENT_TRIES = 40
GOLDEN = 0.6180339887498949
ANNOTATIONS_NAME = paths.ANNOTATIONS.name  # detection + segmentation index, under data/labels
MASKS_DIR = "masks"  # segmentation masks, under data/labels
CLASSIFICATION_DIR = "classification"  # classification images, under data/raw
CLASSIFICATION_NAME = "classification.json"  # classification index, under data/labels
CLASSIFICATION_SIZE = 64  # px, square


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    shift = rng.integers(-amount, amount + 1, size=3)
    return tuple(min(255, max(0, c + int(d))) for c, d in zip(rgb, shift))


def _draw_person(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    shirt = _jitter(rng, (205, 40, 45), 30)
    trousers = tuple(c // 2 for c in shirt)
    head = max(3, round(min(w * 0.8, h * 0.25)))
    hx = (w - head) // 2
    d.ellipse([hx, 0, hx + head - 1, head - 1], fill=_jitter(rng, (235, 195, 160), 15))
    hip = head + round((h - head) * 0.5)
    d.rectangle([0, head, w - 1, hip], fill=shirt)  # torso touches the head: one connected figure
    leg = max(1, round(w * 0.38))
    d.rectangle([0, hip, leg - 1, h - 1], fill=trousers)
    d.rectangle([w - leg, hip, w - 1, h - 1], fill=trousers)


def _draw_cart(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    body = _jitter(rng, (45, 110, 215), 25)
    r = max(2, round(h * 0.17))  # wheel radius
    basket_bottom = h - 1 - r
    d.rectangle([0, 0, w - 1, basket_bottom], fill=body, outline=(20, 40, 90))
    mesh = tuple(min(255, c + 70) for c in body)
    for x in range(3, w - 3, 4):  # vertical wires of the basket
        d.line([x, 2, x, basket_bottom - 2], fill=mesh)
    for cx in (round(w * 0.22), round(w * 0.78)):
        d.ellipse([cx - r, h - 1 - 2 * r, cx + r, h - 1], fill=(25, 25, 25))


def _draw_shelf(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    wood = _jitter(rng, (215, 165, 60), 25)
    dark = (70, 45, 15)
    post = max(1, round(w * 0.08))
    d.rectangle([0, 0, w - 1, h - 1], fill=wood)
    d.rectangle([0, 0, post - 1, h - 1], fill=dark)
    d.rectangle([w - post, 0, w - 1, h - 1], fill=dark)
    boards = int(rng.integers(3, 6))  # top and bottom boards included
    thick = max(1, round(h * 0.05))
    for k in range(boards):
        y = round(k * (h - thick) / (boards - 1))
        d.rectangle([0, y, w - 1, y + thick - 1], fill=dark)


# (draw function, range of width / height)
SHAPES = {1: (_draw_person, (0.35, 0.45)), 2: (_draw_cart, (1.3, 1.5)), 3: (_draw_shelf, (0.8, 1.2))}


def _object_patch(cat: int, rng: np.random.Generator, max_side: int) -> Image.Image:
    """Draw one object on a transparent patch cropped to what was drawn, so its box is tight."""
    draw_fn, (lo, hi) = SHAPES[cat]
    aspect = rng.uniform(lo, hi)
    long_side = int(rng.integers(MIN_SIDE, max_side + 1))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    patch = Image.new("RGBA", (max(w, 3), max(h, 3)), (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(patch), patch.width, patch.height, rng)
    return patch.crop(patch.getchannel("A").getbbox())


def _overlap(a: list[int], b: list[int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth muted gradient (bilinear upsampling of a coarse random grid) plus soft blotches."""
    grey = rng.uniform(80, 170)
    grid = grey + rng.uniform(-25, 25, size=(3, 4, 1)) + rng.uniform(-12, 12, size=(3, 4, 3))
    img = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    blotches = img.copy()
    d = ImageDraw.Draw(blotches)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(5, 30, size=2)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_jitter(rng, (int(grey),) * 3, 30))
    return Image.blend(img, blotches, 0.5)  # half-transparent: texture, not objects


def _render(rng: np.random.Generator, width: int, height: int, night: bool):
    """One image: returns (uint8 HxWx3 array, [(category_id, [x, y, w, h]), ...], uint8 HxW class mask).

    The mask comes from the pasted patches' alpha and draws no random numbers, so the
    pictures are the same as before masks existed."""
    img = _background(rng, width, height)
    mask = Image.new("L", (width, height), 0)
    max_side = min(MAX_SIDE, width - 2, height - 2)
    objects: list[tuple[int, list[int]]] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cat = int(rng.integers(1, 4))
        patch = _object_patch(cat, rng, max_side)
        for _ in range(PLACEMENT_TRIES):  # resample placements that would hide or overlap another
            x = int(rng.integers(0, width - patch.width + 1))
            y = int(rng.integers(0, height - patch.height + 1))
            box = [x, y, patch.width, patch.height]
            if all(_overlap(box, other) < MAX_OVERLAP for _, other in objects):
                img.paste(patch, (x, y), patch)
                mask.paste(cat, (x, y, x + patch.width, y + patch.height), patch.getchannel("A"))
                objects.append((cat, box))
                break  # an object that never fits is dropped; the first always fits
    pixels = np.asarray(img, dtype=np.float32)
    return _finish(pixels, rng, night), objects, np.asarray(mask)


def _finish(pixels: np.ndarray, rng: np.random.Generator, night: bool) -> np.ndarray:
    """Night dimming and sensor noise, then back to uint8."""
    if night:
        pixels = pixels * rng.uniform(0.35, 0.5) * np.array([0.85, 0.9, 1.0], dtype=np.float32)  # dim, bluish
        sigma = rng.uniform(7, 11)
    else:
        sigma = rng.uniform(2, 4)
    pixels += np.float32(sigma) * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _render_single(rng: np.random.Generator, size: int, night: bool) -> tuple[np.ndarray, int]:
    """One classification image: a single object of a random class on a background."""
    img = _background(rng, size, size)
    cat = int(rng.integers(1, 4))
    patch = _object_patch(cat, rng, min(MAX_SIDE, size - 2))
    x = int(rng.integers(0, size - patch.width + 1))
    y = int(rng.integers(0, size - patch.height + 1))
    img.paste(patch, (x, y), patch)
    return _finish(np.asarray(img, dtype=np.float32), rng, night), cat


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=3, optimize=False)  # no metadata
    return buf.getvalue()


def _night_flags(seed: int, n: int, night_fraction: float, stream: int = 0) -> list[bool]:
    # Golden-ratio sequence: every prefix of the dataset holds close to exactly night_fraction
    # night images, and image i's flag does not depend on N.
    offset = np.random.default_rng([seed, 2**31 + stream]).random()
    return [(offset + i * GOLDEN) % 1.0 < night_fraction for i in range(n)]


def _clear_or_refuse(raw: Path, labels: Path, force: bool) -> None:
    existing = [p for p in raw.rglob("*") if p.is_file()] if raw.is_dir() else []
    ours = [labels / ANNOTATIONS_NAME, labels / CLASSIFICATION_NAME, labels / MASKS_DIR]
    if not force:
        if existing:
            raise CvreproError(f"{paths.RAW_DIR} already holds {len(existing)} files; "
                               "refusing to overwrite them (use --force)")
        for p in ours:
            if p.exists():
                raise CvreproError(f"{paths.LABELS_DIR / p.name} already exists; refusing to overwrite it (use --force)")
        return
    if raw.is_dir():
        shutil.rmtree(raw)
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def generate_demo(root: Path, seed: int = 0, n_images: int = 800, width: int = 160, height: int = 120,
                  night_fraction: float = 0.3, force: bool = False, n_classification: int | None = None,
                  classification_size: int = CLASSIFICATION_SIZE) -> dict:
    """Write the demo images to data/raw and labels to data/labels (see the module doc); return stats.

    n_classification: single-object images for the classification variant (default: n_images).
    """
    n_classification = n_images if n_classification is None else n_classification
    if seed < 0:
        raise CvreproError(f"seed must be >= 0, got {seed}")
    if n_images < 1 or n_classification < 0:
        raise CvreproError(f"the number of images must be >= 1, got {n_images}")
    if width < 32 or height < 32 or classification_size < 32:
        raise CvreproError(f"images must be at least 32x32 pixels, got {width}x{height}")
    if not 0.0 <= night_fraction <= 1.0:
        raise CvreproError(f"night_fraction must lie in [0, 1], got {night_fraction}")
    root = Path(root)
    raw, labels = root / paths.RAW_DIR, root / paths.LABELS_DIR
    _clear_or_refuse(raw, labels, force)
    raw.mkdir(parents=True, exist_ok=True)

    images, annotations = [], []
    nights = _night_flags(seed, n_images, night_fraction)
    for i in tqdm(range(n_images), desc="demo images", unit="img", file=sys.stderr, disable=None):
        night = nights[i]
        pixels, objects, mask = _render(np.random.default_rng([seed, i]), width, height, night)
        name = f"img_{i:06d}.png"
        atomic_write_bytes(raw / name, _png_bytes(pixels))
        atomic_write_bytes(labels / MASKS_DIR / name, _png_bytes(mask))
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height,
                       "time_of_day": "night" if night else "day", "mask_file": f"{MASKS_DIR}/{name}"})
        for cat, (x, y, w, h) in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                                "area": round(float(w * h), 2), "iscrowd": 0})

    info = {"description": "cvrepro synthetic demo dataset: detection boxes and segmentation masks",
            "generator": "cvrepro demo", "seed": seed, "version": GENERATOR_VERSION, "night_fraction": night_fraction}
    write_json(labels / ANNOTATIONS_NAME, {"info": info, "images": images, "annotations": annotations,
                                           "categories": CATEGORIES})
    classification = _generate_classification(raw, labels, seed, n_classification, classification_size,
                                              night_fraction)

    names = {c["id"]: c["name"] for c in CATEGORIES}
    per_class = {name: 0 for name in names.values()}
    for a in annotations:
        per_class[names[a["category_id"]]] += 1
    night_count = sum(im["time_of_day"] == "night" for im in images)
    return {"images": n_images, "objects": len(annotations), "per_class": per_class,
            "time_of_day": {"day": n_images - night_count, "night": night_count},
            "classification": classification}


def _generate_classification(raw: Path, labels: Path, seed: int, n: int, size: int, night_fraction: float) -> dict:
    """The classification variant: one object per image, indexed by classification.json."""
    images, annotations = [], []
    nights = _night_flags(seed, n, night_fraction, stream=1)
    for i in tqdm(range(n), desc="demo classification", unit="img", file=sys.stderr, disable=None):
        # stream 1 keeps these draws apart from scene i's ([seed, i]); image i depends only on (seed, i)
        pixels, cat = _render_single(np.random.default_rng([seed, i, 1]), size, nights[i])
        name = f"{CLASSIFICATION_DIR}/cls_{i:06d}.png"
        atomic_write_bytes(raw / name, _png_bytes(pixels))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size,
                       "time_of_day": "night" if nights[i] else "day"})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": cat})
    info = {"description": "cvrepro synthetic demo classification dataset: one object per image",
            "generator": "cvrepro demo", "seed": seed, "version": GENERATOR_VERSION, "night_fraction": night_fraction}
    write_json(labels / CLASSIFICATION_NAME, {"info": info, "images": images, "annotations": annotations,
                                              "categories": CATEGORIES})
    per_class = {c["name"]: sum(a["category_id"] == c["id"] for a in annotations) for c in CATEGORIES}
    return {"images": n, "per_class": per_class}
