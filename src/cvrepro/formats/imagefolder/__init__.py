"""ImageFolder classification: `SRC/<class name>/**.jpg|png|...`, one folder per class.

Class ids are 1..K in sorted folder-name order (torchvision's ImageFolder order,
shifted by one: 0 is reserved). An image keeps its path, class folder included
(`cat/001.jpg`), under data/raw. Files without an image extension and hidden
files are skipped; an image file that does not decode is a bad file (`--bad-files`), an
image outside a class folder is unlabelled (`--unlabelled drop` leaves it out).
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError
from cvrepro.formats.common import IMAGE_EXTENSIONS, Dataset, FileCheck, categories_from_names, find_images


NAME = "imagefolder"
TASK = "classification"


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


def read(src: Path, files: FileCheck | None = None, **_options) -> Dataset:
    src = Path(src)
    files = files or FileCheck(src=src)
    if not src.is_dir():
        raise CvreproError(f"{src}: directory not found")
    for rel in sorted(rel for rel in find_images(src) if "/" not in rel):
        files.keep_unlabelled(src / rel, "image outside a class folder (expected SRC/<class>/<image>)",
                              negative_ok=False)
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    categories = categories_from_names([p.name for p in class_dirs], str(src))
    images, anns, sources = [], [], {}
    for category, folder in zip(categories, class_dirs):
        found = find_images(folder)
        if not found:
            raise CvreproError(f"{folder}: class folder holds no images")
        for rel, file in found.items():
            probed = files.probe(file, f"{folder.name}/{rel}")
            if probed is None:
                continue
            image_id = len(images) + 1
            images.append({"id": image_id, **probed})
            anns.append({"id": image_id, "image_id": image_id, "category_id": category["id"]})
            sources[image_id] = str(file)
    files.raise_if_any()
    return Dataset(TASK, categories, images, anns, sources)


def write(dataset: Dataset, dest: Path, **_options) -> None:
    """DEST/<class name>/<file_name> (a leading folder equal to the class name is not repeated)."""
    names = dataset.names()
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        labels = by_image[im["id"]]
        if len(labels) != 1:
            raise CvreproError(f"image id {im['id']} ({im['file_name']}) has {len(labels)} labels; "
                               "classification needs exactly one")
        name = names[labels[0]["category_id"]]
        rel = im["file_name"].split("/", 1)[1] if im["file_name"].startswith(name + "/") else im["file_name"]
        target = dest / name / rel
        if target.exists():
            raise CvreproError(f"image id {im['id']} ({im['file_name']}) and another image both export to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.read(dataset.image_source[im["id"]]))
