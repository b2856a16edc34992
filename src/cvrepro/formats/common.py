"""The in-memory form every importer produces and every exporter consumes, and the image helpers they share.

A `Dataset` is the project's own index (docs/label-formats.md) before it is written:
COCO-shaped `images`, `annotations` and `categories`, plus where each image's (and
mask's) bytes come from, so a converter never holds pixels of the whole dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.images import QUARTER_TURNS, orientation
from cvrepro.dataset.index import BOX_DIGITS, INVALID_MODES, BoxCheck, tidy  # noqa: F401 (the importers' names)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}  # compared lower-cased
BAD_FILE_MODES = ("fail", "drop")  # --bad-files; the default first
UNLABELLED_MODES = ("negative", "drop", "fail")  # --unlabelled; the default first


def read_local(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CvreproError(f"{path}: cannot read: {e.strerror or e}") from None


@dataclass
class Dataset:
    task: str
    categories: list[dict]  # [{"id", "name", ...}], ids 1..K
    images: list[dict]  # {"id", "file_name", "width", "height", attributes..., "mask_file" for segmentation}
    annotations: list[dict] = field(default_factory=list)  # boxes (detection) or one class per image
    image_source: dict[int, str] = field(default_factory=dict)  # image id -> where its bytes are
    mask_source: dict[int, str] = field(default_factory=dict)  # image id -> where its mask's bytes are
    read: Callable[[str], bytes] = read_local

    def index(self) -> dict:
        """The project's annotations.json."""
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}

    def annotations_by_image(self) -> dict[int, list[dict]]:
        by_image: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for a in self.annotations:
            by_image.setdefault(a["image_id"], []).append(a)
        return by_image

    def names(self) -> dict[int, str]:
        return {c["id"]: c["name"] for c in self.categories}


T = TypeVar("T")


class BadAnnotation(CvreproError):
    """One image's annotation file is malformed (not XML, a missing field, not a number, a wrong field count):
    a bad file under `--bad-files`, which `FileCheck.annotation` lists (fail) or drops with its image (drop).
    A box that parses but lies outside its image is `--invalid`'s business (BoxCheck), not this."""


class FileCheck:
    """What to do with a whole file that cannot be imported: `cvrepro import --bad-files` and `--unlabelled`,
    as BoxCheck is `--invalid` for one box.

    Bad files (an unreadable or truncated image, a malformed or truncated annotation file, an annotation file
    without an image, a second entry for one file): `fail` (default) collects every one and `raise_if_any` lists them all in one error, so a user fixes
    the source in one round; `drop` leaves each out and makes it a report row. Unlabelled images (no
    annotation file, or no annotation): `negative` keeps them as images without objects (detection only),
    `drop` leaves them out (reported), `fail` lists them as problems. Paths are said relative to `src`.
    """

    def __init__(self, bad_files: str = "fail", unlabelled: str = "negative", src: Path | None = None):
        if bad_files not in BAD_FILE_MODES:
            raise CvreproError(f"--bad-files {bad_files!r}: choose one of {', '.join(BAD_FILE_MODES)}")
        if unlabelled not in UNLABELLED_MODES:
            raise CvreproError(f"--unlabelled {unlabelled!r}: choose one of {', '.join(UNLABELLED_MODES)}")
        self.mode, self.unlabelled_mode, self.src = bad_files, unlabelled, src
        self.rows: list[dict] = []  # report rows: file, id, problem, action (before/after empty)
        self.problems: list[str] = []  # one line each, raised together
        self.negatives = 0

    def rel(self, path) -> str:
        """`path` relative to SRC (posix), or as given when it lies outside."""
        return relative_to_src(str(path), self.src)

    def bad(self, path, problem: str) -> None:
        if self.mode == "fail":
            self.problems.append(f"{self.rel(path)}: {problem}")
        else:
            self.rows.append(_file_row(self.rel(path), "bad file", problem))

    def annotation(self, path: Path, image: Path, parse: Callable[[], T]) -> T | None:
        """`parse()` (the objects of one image's annotation file), or None when the file is malformed
        (BadAnnotation): a bad file, listed (fail) or left out with its image (drop), so that one truncated
        file among thousands neither stops the import nor leaves its image in as a false negative."""
        try:
            return parse()
        except BadAnnotation as e:
            text = str(e)  # "<path>: problem" or "<path>, line 3: problem": the path said relative to SRC
            rest = text[len(str(path)):] if text.startswith(str(path)) else f": {text}"
            if self.mode == "fail":
                self.problems.append(self.rel(path) + rest)
            else:
                self.rows.append(_file_row(self.rel(path), "bad file", f"{rest.lstrip(':, ')}; its image "
                                                                         f"{self.rel(image)} is left out with it"))
            return None

    def probe(self, path: Path, rel: str) -> dict | None:
        """probe_image, or None (recorded as a bad file) when the image does not decode."""
        try:
            return probe_image(path, rel)
        except CvreproError as e:
            self.bad(path, str(e).split(": ", 1)[1] if str(e).startswith(f"{path}: ") else str(e))
            return None

    def keep_unlabelled(self, path, why: str, negative_ok: bool = True) -> bool:
        """Whether to keep an image without annotations (as a negative); a drop or a problem is recorded."""
        if self.unlabelled_mode == "negative" and negative_ok:
            self.negatives += 1
            return True
        if self.unlabelled_mode == "drop":
            self.rows.append(_file_row(self.rel(path), "unlabelled", why))
            return False
        hint = "--unlabelled drop to leave it out" + (" or negative to keep it" if negative_ok else "")
        self.problems.append(f"{self.rel(path)}: {why} ({hint})")
        return False

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            raise CvreproError(f"{n} file{'s' * (n > 1)} cannot be imported; nothing was written "
                               f"(--bad-files drop imports the rest):\n" + "\n".join(self.problems))

    def counts(self, negatives: bool = True) -> dict:
        """What was dropped (and, with negatives, how many unlabelled images were kept as negatives: a count
        the index itself shows, so `info.cvrepro_import` leaves it out and a YOLO round trip stays exact)."""
        unlabelled = {"mode": self.unlabelled_mode, "dropped": sum(r["id"] == "unlabelled" for r in self.rows)}
        return {"mode": self.mode, "dropped": sum(r["id"] == "bad file" for r in self.rows),
                "unlabelled": {**unlabelled, **({"negatives": self.negatives} if negatives else {})}}


def _file_row(file: str, kind: str, problem: str) -> dict:
    return {"file": file, "id": kind, "problem": problem, "action": "dropped", "before": None, "after": None}


def relative_to_src(file: str, src: Path | None) -> str:
    """A report's path relative to the source folder (not this machine's absolute path); as given if outside."""
    if src is None:
        return file
    try:
        return Path(file).resolve().relative_to(Path(src).resolve()).as_posix()
    except ValueError:
        return file


def categories_from_names(names: list[str], where: str) -> list[dict]:
    """Category ids 1..K in the given order; names must be unique and non-empty."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise CvreproError(f"{where}: class {i}: the name must be a non-empty string, got {name!r}")
        if name in seen:
            raise CvreproError(f"{where}: class {i}: duplicate class name {name!r} (also class {seen[name]})")
        seen[name] = i
    return [{"id": i + 1, "name": name} for i, name in enumerate(names)]


def contiguous_names(dataset: Dataset, fmt: str) -> list[str]:
    """Class names by id for formats that index classes by position (YOLO, mask values): ids must be 1..K."""
    ids = sorted(dataset.names())
    if ids != list(range(1, len(ids) + 1)):
        raise CvreproError(f"format '{fmt}' numbers classes by position, but the category ids are {ids}, "
                           f"not 1..{len(ids)}")
    return [dataset.names()[i] for i in ids]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(folder: Path) -> dict[str, Path]:
    """Every image under folder (any depth, any case of extension) by posix relpath, sorted; hidden files and
    folders (.DS_Store, .ipynb_checkpoints/) are skipped."""
    found = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if is_image_file(p) and not any(part.startswith(".") for part in rel.parts):
            found[rel.as_posix()] = p
    return found


def stem_key(rel: str) -> str:
    """'sub/a.JPG' -> 'sub/a': how labels, XMLs and masks are paired with their image."""
    return rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel


def by_stem(images: dict[str, Path], folder: Path, files: "FileCheck | None" = None) -> dict[str, str]:
    """stem key -> image relpath; two images with one stem (a.jpg, a.png) would make labels ambiguous: an error,
    or with `files` a bad file (the second is taken out of `images`)."""
    out: dict[str, str] = {}
    for rel in list(images):
        key = stem_key(rel)
        if key in out:
            problem = f"same name as {folder / out[key]} but for the extension; its labels would be ambiguous"
            if files is None:
                raise CvreproError(f"{folder / rel}: {problem}")
            files.bad(images.pop(rel), problem.replace(str(folder / out[key]), files.rel(folder / out[key])))
            continue
        out[key] = rel
    return out


def probe_image(path: Path, rel: str) -> dict:
    """{file_name, width, height} of an image as displayed: decodes it fully (unreadable -> error naming it).

    The file is stored as delivered (name, format and bytes); a JPEG with an EXIF
    orientation other than 1 is displayed rotated, labelling tools draw boxes in that
    displayed frame, and the one reader (`dataset.images.load_image_rgb`) applies it,
    so `width`/`height` are the displayed size.
    """
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
            turned = orientation(im) in QUARTER_TURNS
    except UnidentifiedImageError:
        raise CvreproError(f"{path}: unreadable image: not a format PIL can identify") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on broken files
        raise CvreproError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from None
    if turned:  # a quarter turn: displayed width is the stored height
        width, height = height, width
    return {"file_name": rel, "width": width, "height": height}


def check_mask(mask: np.ndarray, n_classes: int, size: tuple[int, int], where: str, image: str,
               ignore_index: int) -> None:
    height, width = mask.shape[:2]
    if (width, height) != size:
        raise CvreproError(f"{where}: mask is {width}x{height} but its image {image} is {size[0]}x{size[1]}")
    bad = sorted(set(np.unique(mask).tolist()) - set(range(n_classes + 1)) - {ignore_index})
    if bad:
        raise CvreproError(f"{where}: mask values {bad[:10]} are not class ids 0..{n_classes} or {ignore_index} "
                           "(ignore)")
