"""Which split each image is exported in (`cvrepro export --splits`), and where a split layout puts it.

An export that loses the splits cannot go back to the tools: Ultralytics needs `train:`/`val:` folders,
CVAT and Datumaro one annotations file per subset. `--splits`:

- `project`: the project's own split, `data/splits/splits.json` (what the pipeline trained and scored on);
- `subsets`: the source's subsets the importers recorded (the image attribute `subset`);
- `none`: no split (the flat layout);
- `auto` (default): `project` where splits.json exists, else `subsets` where an image has one, else `none`.

Each plug-in declares what it can write in WRITES_SPLITS: NAMED (any subset name: one annotations file or
image list per name, COCO and VOC), STANDARD (only train/val/test, the folders a trainer reads: YOLO,
masks, ImageFolder; `valid`, `training`, ... are mapped to them) or None (no splits).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import ANNOTATIONS, SPLITS
from cvrepro.core.relpaths import normalize_relpath
from cvrepro.dataset.splits import SPLIT_NAMES, SUBSET_NAMES
from cvrepro.formats.common import Dataset, stem_key

MODES = ("auto", "project", "subsets", "none")
NAMED, STANDARD = "named", "standard"  # the values of a plug-in's WRITES_SPLITS (None: it writes no splits)
UNSPLIT = "default"  # Datumaro's subset name for images in no subset (COCO, VOC)

Assignment = dict[int, "str | None"]  # image id -> split name, None: in no split


def split_names(assignment: Assignment | None) -> list[str]:
    """The splits present, train/val/test first."""
    found = {s for s in (assignment or {}).values() if s is not None}
    return [s for s in SPLIT_NAMES if s in found] + sorted(found - set(SPLIT_NAMES))


def summary(source: str, assignment: Assignment | None) -> dict:
    counts = Counter(s for s in (assignment or {}).values())
    out = {"from": source, "counts": {s: counts[s] for s in split_names(assignment)}}
    if assignment and counts[None]:
        out["unsplit"] = counts[None]
    return out


def _standard(name: str) -> str | None:
    return SUBSET_NAMES.get(name.lower())


def from_subsets(dataset: Dataset, writes: str, fmt: str) -> Assignment:
    """The importers' `subset` attribute; a STANDARD layout maps it to train/val/test or refuses it."""
    out: Assignment = {}
    for im in dataset.images:
        subset = im.get("subset")
        if subset is None or writes == NAMED:
            out[im["id"]] = None if subset is None else str(subset)
            continue
        out[im["id"]] = _standard(str(subset))
        if out[im["id"]] is None:
            raise CvreproError(f"{ANNOTATIONS}: image id {im['id']} ({im['file_name']}): subset {subset!r} has no "
                               f"place in the {fmt} layout (train, val, test); export with --splits project "
                               "(after `dvc repro split`) or --splits none")
    return out


def from_split_file(dataset: Dataset, text: bytes, where: str) -> Assignment:
    """splits.json's membership; it must list exactly the images of the labels (else it is stale)."""
    try:
        record = json.loads(text)
        members = record["splits"]
        by_path = {normalize_relpath(p): name for name in SPLIT_NAMES for p in members.get(name, [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CvreproError(f"{where}: not a splits record ('splits' with train/val/test lists of image paths); "
                           "rebuild it with `dvc repro split`") from None
    out: Assignment = {}
    for im in dataset.images:
        split = by_path.pop(normalize_relpath(im["file_name"]), None)
        if split is None:
            raise CvreproError(f"{where}: image {im['file_name']} of {ANNOTATIONS} is in no split: the file is "
                               "stale; run `dvc repro split`, or export with --splits subsets or --splits none")
        out[im["id"]] = split
    if by_path:
        raise CvreproError(f"{where}: lists {next(iter(by_path))}, which {ANNOTATIONS} does not hold: the file "
                           "is stale; run `dvc repro split`, or export with --splits subsets or --splits none")
    return out


def choose(mode: str, dataset: Dataset, writes: str | None, fmt: str,
           split_file: Callable[[], bytes | None]) -> tuple[str, Assignment | None]:
    """(where the splits came from, the assignment; None for a flat export). `split_file`: splits.json's
    bytes, None where the project has none (read only when the mode needs it)."""
    if mode not in MODES:
        raise CvreproError(f"--splits {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return "none", None
    if writes is None:
        if mode == "auto":
            return "none", None
        raise CvreproError(f"--splits {mode}: the {fmt} layout has no place for splits; use --splits none")
    text = split_file() if mode in ("auto", "project") else None
    if text is not None:
        return "project", from_split_file(dataset, text, str(SPLITS))
    if mode == "project":
        raise CvreproError(f"--splits project: {SPLITS} not found; run `dvc repro split` first")
    if mode == "auto" and not any("subset" in im for im in dataset.images):
        return "none", None
    return "subsets", from_subsets(dataset, writes, fmt)


def name_in_split(im: dict, split: str | None) -> str:
    """The image's path inside its split folder: file_name without a leading folder that names that split
    (`train/`, or `valid/` in `val`), so an import of the export and a new export give the same path."""
    name = im["file_name"]
    top = name.split("/", 1)[0] if "/" in name else None
    if split is None or top is None or (top != split and _standard(top) != split):
        return name
    return name[len(top) + 1:]


def placed(dataset: Dataset, assignment: Assignment | None, unsplit: str | None = None, by_stem: bool = False,
           drop: str | None = None) -> dict[int, tuple[str | None, str]]:
    """image id -> (split or `unsplit`, path inside the split folder); two images at one path (or, by_stem,
    at one path but for the extension: their label files would collide) are refused, and so is an image in
    no split (`unsplit` None: at the top) whose path would put it inside a split folder. `drop`: a folder
    name left out of the path inside a split (YOLO: `images`, see yolo.write)."""
    out, seen, folders = {}, {}, set(split_names(assignment))
    for im in dataset.images:
        split = (assignment or {}).get(im["id"])
        group, name = split or unsplit, name_in_split(im, split)
        if split and drop:
            name = "/".join([part for part in name.split("/")[:-1] if part != drop] + [name.rsplit("/", 1)[-1]])
        key = f"{group}/{name}" if group else name
        if group is None and key.split("/", 1)[0] in folders:
            raise CvreproError(f"{ANNOTATIONS}: image {im['file_name']} has no subset but would export into the "
                               f"{key.split('/', 1)[0]} split's folder; export with --splits project or none")
        key = stem_key(key) if by_stem else key
        if key in seen:
            raise CvreproError(f"{ANNOTATIONS}: images {seen[key]} and {im['file_name']} would both export to "
                               f"{key}{'.*' if by_stem else ''}; rename one, or export with another --splits")
        seen[key] = im["file_name"]
        out[im["id"]] = (group, name)
    return out


def every_image_split(dataset: Dataset, assignment: Assignment | None, fmt: str) -> None:
    """A layout whose importer reads the split from the top folders (masks, ImageFolder) cannot hold an image in
    no split beside them: refuse a partial assignment."""
    loose = [im for im in dataset.images if assignment is not None and assignment.get(im["id"]) is None]
    if loose:
        raise CvreproError(f"{ANNOTATIONS}: image {loose[0]['file_name']} (and {len(loose) - 1} more) has no subset, "
                           f"but others have: the {fmt} layout puts every image in a split folder or none; export "
                           "with --splits project (after `dvc repro split`) or --splits none")


def split_folder_subset(folders: list[str]) -> bool:
    """Do these top-level folder names (of images/, or of an ImageFolder) name splits, as our export writes
    them and Ultralytics / torchvision users lay them out (train/, val/, test/; valid/ ...)?"""
    return bool(folders) and all(f.lower() in SUBSET_NAMES for f in folders)
