"""Segmentation mask folders: `SRC/images/**`, `SRC/masks/**.png` (same relative path and stem), `SRC/classes.txt`.

classes.txt: line i names class i, line 0 is the background (its name is not kept).
A mask is one channel (mode L, or P whose palette indices are the class ids) of the
image's displayed size; each pixel is a class id 0..K or 255 (ignore). Every image
needs a mask. In the project a mask lives at `data/labels/masks/<image stem>.png`
(8-bit grayscale) and the image entry's `mask_file` names it. When every top folder of `SRC/images/` names a
split (train/, val/, test/; valid/ ...), as the export with splits writes, it is the image's `subset`.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError, atomic_write_bytes, atomic_write_text
from cvrepro.formats.common import (
    Dataset,
    by_stem,
    labels_by_stem,
    categories_from_names,
    check_mask,
    contiguous_names,
    find_images,
    probe_image,
    stem_key,
)
from cvrepro.dataset.masks import decode_mask, mask_png
from cvrepro.formats.splits import STANDARD, Assignment, every_image_split, placed, split_folder_subset


NAME = "masks"
TASK = "segmentation"
WRITES_SPLITS = STANDARD  # images/<split>/ + masks/<split>/, train/val/test


def detect(src: Path) -> bool:
    """A mask-folder source: SRC/images/, SRC/masks/ and SRC/classes.txt."""
    return (src / "images").is_dir() and (src / "masks").is_dir() and (src / "classes.txt").is_file()


def _class_names(src: Path) -> list[str]:
    path = src / "classes.txt"
    if not path.is_file():
        raise CvreproError(f"{path}: not found (line i names class i, line 0 the background)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        raise CvreproError(f"{path}: needs the background on line 0 and at least one class after it")
    categories_from_names(lines[1:], str(path))  # unique, non-empty
    return lines[1:]


def read(src: Path, ignore_index: int = 255, **_options) -> Dataset:
    src = Path(src)
    image_dir, mask_dir = src / "images", src / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise CvreproError(f"{folder}: directory not found")
    names = _class_names(src)
    files = find_images(image_dir)
    masks = labels_by_stem(mask_dir, ".png", by_stem(files, image_dir), image_dir)

    tops = [p.name for p in image_dir.iterdir() if not p.name.startswith(".")]
    split_layout = split_folder_subset(tops) and all((image_dir / t).is_dir() for t in tops)
    images, sources, mask_sources = [], {}, {}
    for image_id, (rel, file) in enumerate(files.items(), start=1):
        mask = masks.get(stem_key(rel))
        if mask is None:
            raise CvreproError(f"{file}: no mask {mask_dir / (stem_key(rel) + '.png')}")
        probed = probe_image(file, rel)
        check_mask(decode_mask(mask.read_bytes(), mask, stored=False), len(names), (probed["width"], probed["height"]),
                   str(mask), str(file), ignore_index)
        images.append({"id": image_id, **probed, "mask_file": f"masks/{stem_key(probed['file_name'])}.png",
                       **({"subset": rel.split("/", 1)[0]} if split_layout else {})})
        sources[image_id], mask_sources[image_id] = str(file), str(mask)
    return Dataset(TASK, categories_from_names(names, str(src / "classes.txt")), images, [],
                   sources, mask_sources)


def write(dataset: Dataset, dest: Path, splits: Assignment | None = None, **_options) -> None:
    """DEST/images/[<split>/]<name>, DEST/masks/[<split>/]<name stem>.png (8-bit class ids), DEST/classes.txt."""
    names = contiguous_names(dataset, "masks")
    every_image_split(dataset, splits, "masks")
    where = placed(dataset, splits, by_stem=True)
    for im in dataset.images:
        split, name = where[im["id"]]
        rel = f"{split}/{name}" if split else name
        target = dest / "images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
        source = dataset.mask_source[im["id"]]
        mask = decode_mask(dataset.read(source), source, stored=False)
        atomic_write_bytes(dest / "masks" / (stem_key(rel) + ".png"), mask_png(mask))
    atomic_write_text(dest / "classes.txt", "".join(f"{n}\n" for n in ["background", *names]))
