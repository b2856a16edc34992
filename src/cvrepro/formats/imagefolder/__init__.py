"""ImageFolder classification: `SRC/<class name>/**.jpg|png|...`, one folder per class.

Class ids are 1..K in sorted folder-name order (torchvision's ImageFolder order,
shifted by one: 0 is reserved). An image keeps its path, class folder included
(`cat/001.jpg`), under data/raw. Files without an image extension and hidden
files are skipped; an image file that does not decode is an error.

The split layout `SRC/<split>/<class name>/**` (every top folder a split name, train/, val/,
test/, holding class folders only: torchvision's and Ultralytics' classify layout, and what
the export with splits writes) gives each image that `subset`; the name keeps the split folder.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.core.fileio import CvreproError
from cvrepro.formats.common import Dataset, categories_from_names, find_images, probe_image
from cvrepro.formats.splits import STANDARD, Assignment, every_image_split, name_in_split, split_folder_subset


NAME = "imagefolder"
TASK = "classification"
WRITES_SPLITS = STANDARD  # <split>/<class>/..., train/val/test (torchvision and Ultralytics classify)


def detect(src: Path) -> bool:
    """An ImageFolder source: only folders at the top (one per class), each holding images."""
    entries = [p for p in src.iterdir() if not p.name.startswith(".")] if src.is_dir() else []
    folders = [p for p in entries if p.is_dir()]
    return bool(folders) and len(folders) == len(entries) and all(find_images(p) for p in folders)


def _folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_layout(src: Path) -> bool:
    """SRC/<split>/<class>/...: every top folder names a split and holds class folders only."""
    tops = _folders(src)
    return split_folder_subset([p.name for p in tops]) and \
        all(not [rel for rel in find_images(p) if "/" not in rel] for p in tops)


def read(src: Path, **_options) -> Dataset:
    src = Path(src)
    if not src.is_dir():
        raise CvreproError(f"{src}: directory not found")
    loose = sorted(rel for rel in find_images(src) if "/" not in rel)
    if loose:
        raise CvreproError(f"{src / loose[0]}: image outside a class folder (expected SRC/<class>/<image>)")
    parts = [(p, p.name) for p in _folders(src)] if _split_layout(src) else [(src, None)]
    class_names = sorted({p.name for part, _ in parts for p in _folders(part)})
    categories = categories_from_names(class_names, str(src))
    ids = {c["name"]: c["id"] for c in categories}
    images, anns, sources = [], [], {}
    for part, subset in parts:
        for folder in _folders(part):
            files = find_images(folder)
            if not files:
                raise CvreproError(f"{folder}: class folder holds no images")
            for rel, file in files.items():
                image_id = len(images) + 1
                name = folder.relative_to(src).as_posix() + "/" + rel
                images.append({"id": image_id, **probe_image(file, name), **({"subset": subset} if subset else {})})
                anns.append({"id": image_id, "image_id": image_id, "category_id": ids[folder.name]})
                sources[image_id] = str(file)
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
