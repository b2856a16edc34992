"""ImageFolder classification: `SRC/<class name>/**.jpg|png|...`, one folder per class.

Class ids are 1..K in sorted folder-name order (torchvision's ImageFolder order,
shifted by one: 0 is reserved). An image keeps its path, class folder included
(`cat/001.jpg`), under data/raw. Files without an image extension and hidden
files are skipped; an image file that does not decode is a bad file (`--bad-files`), an
image outside a class folder is unlabelled (`--unlabelled drop` leaves it out).

The split layout `SRC/<split>/<class name>/**` (every top folder a split name, train/, val/,
test/, holding class folders only: torchvision's and Ultralytics' classify layout, and what
the export with splits writes) gives each image that `subset`; the name keeps the split folder.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError
from cvrepro.formats.common import IMAGE_EXTENSIONS, Dataset, FileCheck, categories_from_names, find_images
from cvrepro.formats.splits import STANDARD, Assignment, every_image_split, name_in_split, split_folder_subset


NAME = "imagefolder"
TASK = "classification"
WRITES_SPLITS = STANDARD  # <split>/<class>/..., train/val/test (torchvision and Ultralytics classify)


LOOKS_FOR = "only class folders (two or more) at the top, each holding images and no annotation files"
LABEL_SUFFIXES = {".xml", ".json", ".txt", ".yaml", ".csv"}  # a folder holding these is a dataset, not a class


def _class_folder(folder: Path) -> bool:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in files) and \
        not any(p.suffix.lower() in LABEL_SUFFIXES for p in files)


def detect(src: Path) -> str | None:
    """An ImageFolder source, described: only folders at the top (one per class, at least two: one class is
    no classification, more likely a folder holding one dataset), each holding images and no labels."""
    entries = [p for p in src.iterdir() if not p.name.startswith(".")] if src.is_dir() else []
    folders = [p for p in entries if p.is_dir()]
    found = len(folders) >= 2 and len(folders) == len(entries) and all(_class_folder(p) for p in folders)
    return f"ImageFolder: {len(folders)} class folders" if found else None


def _folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_layout(src: Path) -> bool:
    """SRC/<split>/<class>/...: every top folder names a split and holds class folders only."""
    tops = _folders(src)
    return split_folder_subset([p.name for p in tops]) and \
        all(not [rel for rel in find_images(p) if "/" not in rel] for p in tops)


def read(src: Path, files: FileCheck | None = None, **_options) -> Dataset:
    src = Path(src)
    files = files or FileCheck(src=src)
    if not src.is_dir():
        raise CvreproError(f"{src}: directory not found")
    for rel in sorted(rel for rel in find_images(src) if "/" not in rel):
        files.keep_unlabelled(src / rel, "image outside a class folder (expected SRC/<class>/<image>)",
                              negative_ok=False)
    parts = [(p, p.name) for p in _folders(src)] if _split_layout(src) else [(src, None)]
    class_names = sorted({p.name for part, _ in parts for p in _folders(part)})
    categories = categories_from_names(class_names, str(src))
    ids = {c["name"]: c["id"] for c in categories}
    images, anns, sources = [], [], {}
    for part, subset in parts:
        for folder in _folders(part):
            found = find_images(folder)
            if not found:
                raise CvreproError(f"{folder}: class folder holds no images")
            for rel, file in found.items():
                name = folder.relative_to(src).as_posix() + "/" + rel
                probed = files.probe(file, name)
                if probed is None:
                    continue
                image_id = len(images) + 1
                images.append({"id": image_id, **probed, **({"subset": subset} if subset else {})})
                anns.append({"id": image_id, "image_id": image_id, "category_id": ids[folder.name]})
                sources[image_id] = str(file)
    files.raise_if_any()
    return Dataset(TASK, categories, images, anns, sources)


def write(dataset: Dataset, dest: Path, splits: Assignment | None = None, **_options) -> None:
    """DEST/[<split>/]<class name>/<file_name> (a leading `<split>/`, then a leading folder equal to the class
    name, is not repeated)."""
    names = dataset.names()
    by_image = dataset.annotations_by_image()
    every_image_split(dataset, splits, "imagefolder")
    for im in dataset.images:
        labels = by_image[im["id"]]
        if len(labels) != 1:
            raise CvreproError(f"image id {im['id']} ({im['file_name']}) has {len(labels)} labels; "
                               "classification needs exactly one")
        name, split = names[labels[0]["category_id"]], (splits or {}).get(im["id"])
        rel = name_in_split(im, split)
        rel = rel.split("/", 1)[1] if rel.startswith(name + "/") else rel
        target = dest / (split or "") / name / rel
        if target.exists():
            raise CvreproError(f"image id {im['id']} ({im['file_name']}) and another image both export to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
