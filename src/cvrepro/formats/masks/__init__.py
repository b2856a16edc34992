"""Segmentation mask folders: `SRC/images/**`, `SRC/masks/**.png` (same relative path and stem), `SRC/classes.txt`.

classes.txt: line i names class i, line 0 is the background (its name is not kept).
A mask is one channel (mode L, or P whose palette indices are the class ids) of the
image's displayed size; each pixel is a class id 0..K or 255 (ignore). Every image
needs a mask (one without is unlabelled: `--unlabelled drop` leaves it out; there are no
negatives here); a mask without an image is a bad file (`--bad-files`). In the project a mask
lives at `data/labels/masks/<image stem>.png` (8-bit grayscale) and the image entry's
`mask_file` names it. When every top folder of `SRC/images/` names a split (train/, val/, test/;
valid/ ...), as the export with splits writes, it is the image's `subset`.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.config.params import IGNORE_INDEX
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, atomic_write_text
from cvrepro.formats.common import (
    Dataset,
    FileCheck,
    by_stem,
    categories_from_names,
    check_mask,
    contiguous_names,
    find_images,
    stem_key,
)
from cvrepro.dataset.masks import decode_mask, mask_png
from cvrepro.formats.splits import STANDARD, Assignment, every_image_split, placed, split_folder_subset


NAME = "masks"
TASK = "segmentation"
WRITES_SPLITS = STANDARD  # images/<split>/ + masks/<split>/, train/val/test


LOOKS_FOR = "images/ + masks/*.png + classes.txt"


def detect(src: Path) -> str | None:
    """A mask-folder source, described: SRC/images/, SRC/masks/ and SRC/classes.txt."""
    found = (src / "images").is_dir() and (src / "masks").is_dir() and (src / "classes.txt").is_file()
    return "mask folders: images/ + masks/ + classes.txt" if found else None


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


def _masks(mask_dir: Path, stems: dict[str, str], image_dir: Path, files: FileCheck) -> dict[str, Path]:
    """stem key -> mask file; a mask with no image of its name is a bad file."""
    found = {stem_key(p.relative_to(mask_dir).as_posix()): p for p in sorted(mask_dir.rglob("*"))
             if p.is_file() and p.suffix.lower() == ".png"}
    for key in sorted(set(found) - set(stems)):
        files.bad(found.pop(key), f"annotation without an image: no image of that name under {files.rel(image_dir)}")
    return found


def read(src: Path, ignore_index: int = IGNORE_INDEX, files: FileCheck | None = None, **_options) -> Dataset:
    src = Path(src)
    files = files or FileCheck(src=src)
    image_dir, mask_dir = src / "images", src / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise CvreproError(f"{folder}: directory not found")
    names = _class_names(src)
    found_images = find_images(image_dir)
    masks = _masks(mask_dir, by_stem(found_images, image_dir, files), image_dir, files)

    tops = [p.name for p in image_dir.iterdir() if not p.name.startswith(".")]
    split_layout = split_folder_subset(tops) and all((image_dir / t).is_dir() for t in tops)
    images, sources, mask_sources = [], {}, {}
    for rel, file in found_images.items():
        mask = masks.get(stem_key(rel))
        probed = files.probe(file, rel)
        if probed is None or (mask is None and not files.keep_unlabelled(
                file, f"no mask {files.rel(mask_dir / (stem_key(rel) + '.png'))}", negative_ok=False)):
            continue
        image_id = len(images) + 1
        check_mask(decode_mask(mask.read_bytes(), mask, stored=False), len(names), (probed["width"], probed["height"]),
                   str(mask), str(file), ignore_index)
        images.append({"id": image_id, **probed, "mask_file": f"masks/{stem_key(probed['file_name'])}.png",
                       **({"subset": rel.split("/", 1)[0]} if split_layout else {})})
        sources[image_id], mask_sources[image_id] = str(file), str(mask)
    files.raise_if_any()
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
