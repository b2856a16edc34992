"""preprocess: resize every image once into per-split arrays that training reads directly.

Images are stored as uint8 (4x smaller than float32, lossless); the normalisation
(mean/std from params) is recorded beside the data and applied when batching, by
the same function in training and prediction. Each split is a folder of plain
.npy files: byte-identical on rerun (unlike .npz, whose zip entries carry the
time) and memory-mappable, so datasets larger than memory stream through.

Per task, beside images.npy / image_ids.npy / scales.npy: detection writes boxes
(boxes.npy, labels.npy, offsets.npy); segmentation masks.npy (uint8 [N,S,S], class id
per pixel, resized NEAREST so no new ids appear); classification labels.npy (int64 [N]).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..io import read_json, write_json
from ..paths import LABELS_DIR, MANIFEST, PROCESSED_DIR, PROCESSED_INFO, RAW_DIR, SPLITS
from .snapshot import annotations_file, read_mask
from .split import SPLIT_NAMES

LAYOUTS = {
    "detection": "per split: images.npy uint8 [N,3,S,S]; boxes.npy float32 [M,4] xyxy in resized pixels; "
    "labels.npy int64 [M] category ids; offsets.npy int64 [N+1] (boxes of image i are "
    "offsets[i]:offsets[i+1]); image_ids.npy int64 [N]; scales.npy float32 [N,2] (sx, sy: resized = original * s)",
    "segmentation": "per split: images.npy uint8 [N,3,S,S]; masks.npy uint8 [N,S,S] class id per pixel "
    "(0 background, ignore_index ignored; resized nearest); image_ids.npy int64 [N]; scales.npy float32 [N,2]",
    "classification": "per split: images.npy uint8 [N,3,S,S]; labels.npy int64 [N] category id per image; "
    "image_ids.npy int64 [N]; scales.npy float32 [N,2]",
}


def load_image_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _write_split_labels(out_dir: Path, task: str, paths: list[str], by_path: dict, size: int, root: Path) -> None:
    """Images plus one mask (segmentation) or one label (classification) per image."""
    out_dir.mkdir(parents=True)
    n = len(paths)
    images = np.lib.format.open_memmap(out_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    masks = (np.lib.format.open_memmap(out_dir / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
             if task == "segmentation" else None)
    image_ids, scales, labels = [], [], []
    for i, rel in enumerate(tqdm(paths, desc=f"preprocess {out_dir.name}", unit="img", disable=None)):
        entry = by_path[rel]
        im = load_image_rgb(root / RAW_DIR / rel)
        images[i] = np.asarray(im.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
        if masks is not None:
            mask = Image.fromarray(read_mask(root / LABELS_DIR / entry["mask_file"]))
            masks[i] = np.asarray(mask.resize((size, size), Image.NEAREST))
        else:
            labels.append(entry["category_id"])
        image_ids.append(entry["image_id"])
        scales.append([size / im.width, size / im.height])
    for array in (images, masks):
        if array is not None:
            array.flush()
    del images, masks
    np.save(out_dir / "image_ids.npy", np.asarray(image_ids, dtype=np.int64))
    np.save(out_dir / "scales.npy", np.asarray(scales, dtype=np.float32).reshape(-1, 2))
    if task == "classification":
        np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))


def _write_split(out_dir: Path, paths: list[str], by_path: dict, boxes_by_image: dict, size: int, root: Path) -> None:
    out_dir.mkdir(parents=True)
    images = np.lib.format.open_memmap(out_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
    image_ids, scales, offsets, boxes, labels = [], [], [0], [], []
    for i, rel in enumerate(tqdm(paths, desc=f"preprocess {out_dir.name}", unit="img", disable=None)):
        entry = by_path[rel]
        im = load_image_rgb(root / RAW_DIR / rel)
        sx, sy = size / im.width, size / im.height
        images[i] = np.asarray(im.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
        for ann in boxes_by_image[entry["image_id"]]:
            x, y, w, h = ann["bbox"]
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            labels.append(ann["category_id"])
        image_ids.append(entry["image_id"])
        scales.append([sx, sy])
        offsets.append(len(boxes))
    images.flush()
    del images
    np.save(out_dir / "image_ids.npy", np.asarray(image_ids, dtype=np.int64))
    np.save(out_dir / "scales.npy", np.asarray(scales, dtype=np.float32).reshape(-1, 2))
    np.save(out_dir / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(out_dir / "boxes.npy", np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))


def run(params: dict, root: Path = Path(".")) -> dict:
    cfg = params["preprocess"]
    size = int(cfg["size"])
    manifest = read_json(root / MANIFEST)
    splits = read_json(root / SPLITS)
    task = manifest.get("task", "detection")
    by_path = {f["path"]: f for f in manifest["files"]}
    boxes_by_image = defaultdict(list)
    if task == "detection":
        for ann in read_json(root / annotations_file(params))["annotations"]:
            if not ann.get("iscrowd", 0):  # crowd regions are for evaluation only
                boxes_by_image[ann["image_id"]].append(ann)

    # Build beside the output, then swap in: a crash leaves the old data or none, never half.
    out = root / PROCESSED_DIR
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in SPLIT_NAMES:
        if task == "detection":
            _write_split(tmp / name, splits["splits"][name], by_path, boxes_by_image, size, root)
        else:
            _write_split_labels(tmp / name, task, splits["splits"][name], by_path, size, root)
    info = {
        "size": size,
        "mean": cfg["mean"],
        "std": cfg["std"],
        "layout": LAYOUTS[task],
        "class_map": manifest["class_map"],
        "snapshot_id": manifest["snapshot_id"],
        "counts": {n: len(splits["splits"][n]) for n in SPLIT_NAMES},
    }
    if task != "detection":  # detection's preprocess.json stays byte-identical to earlier releases
        info["task"] = task
    write_json(tmp / PROCESSED_INFO.name, info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


class ProcessedSplit:
    """Read access to one split written by `run` (images memory-mapped)."""

    def __init__(self, split_dir: Path):
        self.dir = Path(split_dir)
        self.images = np.load(self.dir / "images.npy", mmap_mode="r")
        self.image_ids = np.load(self.dir / "image_ids.npy")
        self.scales = np.load(self.dir / "scales.npy")
        self.offsets = self._optional("offsets.npy")  # detection
        self.boxes = self._optional("boxes.npy")  # detection
        self.labels = self._optional("labels.npy")  # detection: per box; classification: per image
        self.masks = self._optional("masks.npy", mmap_mode="r")  # segmentation

    def _optional(self, name: str, mmap_mode: str | None = None):
        path = self.dir / name
        return np.load(path, mmap_mode=mmap_mode) if path.exists() else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def target(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.boxes[a:b], self.labels[a:b]
