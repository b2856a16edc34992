"""`cvrepro labels apply FILE.csv`: label corrections from a reviewer's CSV, all or nothing.

Every row is checked before anything is written; one bad row rejects the whole
file, each problem named by the CSV file, its line number (the header is line 1)
and the field. The labels file is then rewritten atomically in the format
`cvrepro demo` writes (sorted keys, two-space indent), so a correction shows up as
a small diff. The CSV format is documented in docs/labels.md.
"""

from __future__ import annotations

import copy
import csv
import math
import re
import stat
from collections import Counter
from pathlib import Path
from typing import Any

from cvrepro.core.fileio import CvreproError, read_json, write_json
from cvrepro.core.paths import ANNOTATIONS
from cvrepro.core.problems import Problems
from cvrepro.core.relpaths import normalize_relpath

COLUMNS = ("image", "annotation_id", "action", "category", "x", "y", "w", "h")
BOX = ("x", "y", "w", "h")
ACTIONS = ("relabel", "move", "delete", "add")
# Columns a row of each action may fill; all are required except move's optional category (move + relabel).
ALLOWED = {
    "relabel": {"image", "annotation_id", "action", "category"},
    "move": {"image", "annotation_id", "action", "category", *BOX},
    "delete": {"image", "annotation_id", "action"},
    "add": {"image", "action", "category", *BOX},
}
OPTIONAL = {"move": {"category"}}

Row = tuple[int, list[str]]  # (line number of the row's first line, its fields)


class _Problems(Problems):
    """Every problem of the CSV (up to the first 20), each named by file, line and field."""

    def __init__(self, csv_path: Path):
        super().__init__(subject=str(csv_path), outcome="nothing written", outcome_on_single=True)
        self.csv_path = csv_path

    def add(self, line: int, fields: str | list[str] | None, message: str) -> None:  # type: ignore[override]
        """fields: the column (or columns) at fault; None when it is the whole row."""
        names = [fields] if isinstance(fields, str) else fields or []
        where = f"{self.csv_path}:{line}"
        if names:
            where += f": field{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)}"
        super().add(f"{where}: {message}")


# --------------------------------------------------------------------------- reading


def read_rows(csv_path: Path) -> list[Row]:
    """The CSV's non-blank rows with the line each starts on (a quoted field may span lines)."""
    csv_path = Path(csv_path)
    rows: list[Row] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets prepend a BOM
            reader = csv.reader(f)
            start = 1
            for fields in reader:
                if any(v.strip() for v in fields):  # spreadsheets pad the end with empty rows
                    rows.append((start, fields))
                start = reader.line_num + 1
    except FileNotFoundError:
        raise CvreproError(f"{csv_path}: file not found") from None
    except UnicodeDecodeError as e:
        raise CvreproError(f"{csv_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise CvreproError(f"{csv_path}:{reader.line_num}: malformed CSV: {e}") from None
    return rows


# --------------------------------------------------------------------------- the labels being corrected


class _Labels:
    """Look-ups over the COCO index: images by file_name and id, categories by name and id, annotations by id."""

    def __init__(self, coco: Any, labels_path: Path):
        self.normalize = normalize_relpath
        if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "categories")):
            raise CvreproError(f"{labels_path}: expected a COCO object with 'images' and 'categories' lists")
        if not isinstance(coco.get("annotations", []), list):
            raise CvreproError(f"{labels_path}: 'annotations' must be a list")
        hint = "; run `cvrepro snapshot` to list every problem of the labels file"
        self.images = self._by_id(coco["images"], "images", labels_path, hint)
        self.categories = self._by_id(coco["categories"], "categories", labels_path, hint)
        self.annotations = self._by_id(coco.get("annotations", []), "annotations", labels_path, hint)
        self.image_by_name = {self.normalize(im["file_name"]): im for im in self.images.values()
                              if isinstance(im.get("file_name"), str)}
        self.image_by_name.pop(None, None)  # file_names that escape data/raw: snapshot reports those
        self.category_by_name = {c.get("name"): c for c in self.categories.values()}

    @staticmethod
    def _by_id(items: list, key: str, labels_path: Path, hint: str) -> dict[int, dict]:
        by_id: dict[int, dict] = {}
        for i, e in enumerate(items):
            iid = e.get("id") if isinstance(e, dict) else None
            if not isinstance(iid, int) or isinstance(iid, bool) or iid in by_id:
                raise CvreproError(f"{labels_path}: {key}[{i}]: missing, non-integer or duplicate 'id'{hint}")
            by_id[iid] = e
        return by_id

    def image(self, value: str) -> tuple[dict | None, str | None]:
        """The image a CSV value names: its file_name, else its numeric id. (image, problem)."""
        by_name = self.image_by_name.get(self.normalize(value))
        by_id = self.images.get(_parse_int(value))
        if by_name and by_id and by_name is not by_id:
            return None, (f"{value!r} is both the file_name of image id {by_name['id']} and the id of image "
                          f"{by_id.get('file_name')!r}; write './{value}' for the first or "
                          f"{by_id.get('file_name')!r} for the second")
        if by_name or by_id:
            return by_name or by_id, None
        return None, f"no image with file_name or id {value!r}"

    def category(self, value: str) -> tuple[dict | None, str | None]:
        """The category a CSV value names: its name, else its numeric id. (category, problem)."""
        by_name = self.category_by_name.get(value)
        by_id = self.categories.get(_parse_int(value))
        if by_name and by_id and by_name is not by_id:
            return None, f"{value!r} is the name of category id {by_name['id']} and the id of {by_id.get('name')!r}"
        if by_name or by_id:
            return by_name or by_id, None
        known = ", ".join(f"{c.get('name')} ({cid})" for cid, c in sorted(self.categories.items()))
        return None, f"unknown category {value!r} (known: {known})"

    def describe(self, image: dict) -> str:
        return f"image id {image['id']} ({image.get('file_name')!r})"


# --------------------------------------------------------------------------- checking one row


def _check_header(rows: list[Row], problems: _Problems) -> list[str] | None:
    """The header's column names, lower-cased. The eight COLUMNS must each be there once; any other column
    (`cvrepro label-issues` adds score and reason, a reviewer may add notes) is ignored."""
    if not rows:
        problems.add(1, None, f"empty file; the header must be {','.join(COLUMNS)}")
        return None
    line, fields = rows[0]
    header = [f.strip().lower() for f in fields]
    missing = [c for c in COLUMNS if c not in header]
    twice = [c for c in COLUMNS if header.count(c) > 1]
    if missing or twice:
        extra = [c for c in header if c not in COLUMNS] if missing else []  # a misspelt column, most likely
        what = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                       f"unexpected {', '.join(dict.fromkeys(extra))}" if extra else "",
                                       f"repeated {', '.join(twice)}" if twice else ""]))
        hint = " (comma-separated, not semicolons)" if len(header) == 1 and ";" in header[0] else ""
        problems.add(line, None, f"wrong header ({what}); expected {','.join(COLUMNS)}{hint}")
        return None
    return header


def _parse_int(value: str) -> int | None:
    """Plain ASCII digits only: int() would also take '1_000' and other scripts' digits."""
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else None


def _parse_box(line: int, v: dict[str, str], image: dict, problems: _Problems) -> list[float] | None:
    from cvrepro.dataset.index import box_outside

    box = []
    for name in BOX:
        try:
            number = float(v[name])
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            problems.add(line, name, f"expected a finite number, got {v[name]!r}")
            return None
        box.append(number)
    x, y, w, h = box
    if w <= 0 or h <= 0:
        problems.add(line, "w" if w <= 0 else "h", f"box width and height must be > 0, got w={w:g}, h={h:g}")
        return None
    width, height = image.get("width"), image.get("height")
    if not all(isinstance(d, (int, float)) and d > 0 for d in (width, height)):
        problems.add(line, "image", f"image id {image['id']} has no valid 'width'/'height' in the labels file "
                                    "to check the box against; run `cvrepro snapshot`")
        return None
    field = box_outside(x, y, w, h, width, height)
    if field:
        problems.add(line, field, f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the image ({width}x{height})")
        return None
    return box


def _check_row(line: int, v: dict[str, str], labels: _Labels, task, touched: dict[int, int],
               problems: _Problems) -> dict | None:
    """One validated edit {line, action, image, annotation, category, bbox}, or None (problems recorded)."""
    action = v["action"].lower()  # spreadsheets capitalise
    if action not in ACTIONS:
        problems.add(line, "action", f"unknown action {action!r} (expected {', '.join(ACTIONS)})")
        return None
    if action not in task.correction_actions:
        problems.add(line, "action", f"{action!r} does not apply to a {task.name} dataset; only "
                                     f"{', '.join(task.correction_actions)} {'does' if len(task.correction_actions) == 1 else 'do'}")
        return None
    missing = [c for c in COLUMNS if c in ALLOWED[action] and c not in OPTIONAL.get(action, ()) and not v[c]]
    extra = [c for c in COLUMNS if c not in ALLOWED[action] and v[c]]
    if missing:
        problems.add(line, missing, f"required for {action}")
    if extra:
        problems.add(line, extra, f"must be empty for {action}, got {', '.join(repr(v[c]) for c in extra)}")
    if missing or extra:
        return None

    image, problem = labels.image(v["image"])
    if problem:
        problems.add(line, "image", problem)
        return None
    edit = {"line": line, "action": action, "image": image, "annotation": None, "category": None, "bbox": None}
    if v["annotation_id"]:
        aid = _parse_int(v["annotation_id"])
        if aid is None:
            problems.add(line, "annotation_id", f"expected an integer, got {v['annotation_id']!r}")
            return None
        annotation = labels.annotations.get(aid)
        if annotation is None:
            problems.add(line, "annotation_id", f"no annotation with id {aid}")
            return None
        if annotation.get("image_id") != image["id"]:
            owner = labels.images.get(annotation.get("image_id"))
            owner_text = labels.describe(owner) if owner else f"image id {annotation.get('image_id')!r}"
            problems.add(line, "annotation_id", f"annotation {aid} belongs to {owner_text}, "
                                                f"not to {labels.describe(image)}")
            return None
        if aid in touched:
            problems.add(line, "annotation_id", f"annotation {aid} is already corrected on line {touched[aid]}; "
                                                "one row an annotation")
            return None
        touched[aid] = line
        edit["annotation"] = annotation
    if v["category"]:
        category, problem = labels.category(v["category"])
        if problem:
            problems.add(line, "category", problem)
            return None
        if action == "relabel" and category["id"] == edit["annotation"].get("category_id"):
            problems.add(line, "category", f"annotation {edit['annotation']['id']} is already "
                                           f"{category.get('name')!r}; a relabel must change the category")
            return None
        edit["category"] = category
    if action in ("move", "add"):
        edit["bbox"] = _parse_box(line, v, image, problems)
        if edit["bbox"] is None:
            return None
    if action == "move":
        return _check_move(edit, problems)
    return edit


def _check_move(edit: dict, problems: _Problems) -> dict | None:
    annotation, line = edit["annotation"], edit["line"]
    if "bbox" not in annotation:
        problems.add(line, "action", f"annotation {annotation['id']} has no 'bbox' to move")
        return None
    if annotation.get("segmentation"):  # a polygon or RLE would no longer match the box
        problems.add(line, "action", f"annotation {annotation['id']} has a 'segmentation' outline that moving its "
                                     "box would leave stale; correct it in an annotation tool")
        return None
    same_box = annotation["bbox"] == edit["bbox"]  # [10.0, ...] == [10, ...] in Python
    same_category = edit["category"] is None or edit["category"]["id"] == annotation.get("category_id")
    if same_box and same_category:
        problems.add(line, "x", f"the box equals annotation {annotation['id']}'s current box; nothing to move")
        return None
    return edit


# --------------------------------------------------------------------------- applying


def apply_corrections(coco: dict, rows: list[Row], csv_path: Path, task,
                      labels_path: Path = ANNOTATIONS) -> tuple[dict, dict]:
    """Check every row against `coco`, then return (corrected copy, summary). Raises CvreproError listing
    the problems (file:line: field) if any row is bad; `coco` itself is never modified.

    rows: (line, fields) as `read_rows` returns them, header first.
    task: the labels' task (a `cvrepro.tasks.Task`, chosen by the caller); its `correction_actions` are the
    actions allowed (detection all, classification relabel, segmentation none).
    """
    if isinstance(task, str):  # a caller written before tasks were passed down: say what changed
        raise TypeError(f"apply_corrections: task must be a cvrepro.tasks.Task (tasks.get({task!r})), not its name")
    csv_path, labels_path = Path(csv_path), Path(labels_path)
    refused = task.corrections_refused(labels_path)
    if refused:
        raise CvreproError(refused)
    labels = _Labels(coco, labels_path)
    problems = _Problems(csv_path)
    header = _check_header(rows, problems)
    problems.raise_if_any()
    if len(rows) == 1:
        raise CvreproError(f"{csv_path}: no corrections below the header; nothing written")
    edits, touched = [], {}
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            problems.add(line, None, f"expected {len(header)} fields (the header's {','.join(header)}), "
                                     f"got {len(fields)}")
            continue
        values = {k: f.strip() for k, f in zip(header, fields) if k in COLUMNS}  # other columns: ignored
        edit = _check_row(line, values, labels, task, touched, problems)
        if edit:
            edits.append(edit)
    problems.raise_if_any()
    new = _apply(coco, edits)
    return new, _summary(coco, new, edits, labels, csv_path, labels_path, task.name)


def _apply(coco: dict, edits: list[dict]) -> dict:
    new = copy.deepcopy(coco)
    annotations = new.setdefault("annotations", [])
    by_id = {a["id"]: a for a in annotations}
    next_id = max(by_id, default=0) + 1  # deterministic: new ids follow the largest, in row order
    deleted = set()
    for e in edits:
        if e["action"] == "add":
            x, y, w, h = e["bbox"]
            annotations.append({"id": next_id, "image_id": e["image"]["id"], "category_id": e["category"]["id"],
                                "bbox": e["bbox"], "area": round(w * h, 2), "iscrowd": 0})
            e["new_id"] = next_id
            next_id += 1
            continue
        target = by_id[e["annotation"]["id"]]
        if e["action"] == "delete":
            deleted.add(target["id"])
            continue
        if e["category"] is not None:  # relabel, or a move that also relabels
            target["category_id"] = e["category"]["id"]
        if e["bbox"] is not None:
            target["bbox"] = e["bbox"]
            target["area"] = round(e["bbox"][2] * e["bbox"][3], 2)
    new["annotations"] = [a for a in annotations if a["id"] not in deleted]
    return new


def _summary(coco: dict, new: dict, edits: list[dict], labels: _Labels, csv_path: Path, labels_path: Path,
             task: str) -> dict:
    before = Counter(a.get("category_id") for a in coco.get("annotations", []))
    after = Counter(a.get("category_id") for a in new["annotations"])
    per_class = {c.get("name"): {"before": before[cid], "after": after[cid], "delta": after[cid] - before[cid]}
                 for cid, c in sorted(labels.categories.items())}
    return {
        "csv": str(csv_path),
        "labels": str(labels_path),
        "task": task,
        "corrections": len(edits),
        "actions": {a: sum(e["action"] == a for e in edits) for a in ACTIONS},
        "per_class": per_class,
        "images_changed": sorted({str(e["image"].get("file_name")) for e in edits}),
        "added_ids": [e["new_id"] for e in edits if "new_id" in e],
    }


def next_steps(labels_path: Path, actions: dict[str, int]) -> list[str]:
    labels_dir = Path(labels_path).parent.as_posix()
    bump = "MINOR (annotations added)" if actions.get("add") else "PATCH (label fixes on the same images)"
    steps = [(f"dvc add {labels_dir}", "record the corrected labels"),
             ("dvc repro split", "a new manifest, snapshot_id and split (plain `dvc repro` also retrains)"),
             (f"git commit {labels_dir}.dvc dvc.lock", "a release needs a clean, up-to-date tree"),
             ("cvrepro release dataset", f"a {bump} version")]
    return [f"{command:<38}# {why}" for command, why in steps]


def _require_writable(path: Path) -> None:
    """A labels file the user made read-only is never replaced (a rename would succeed even so, as root
    or in a writable folder, and the file would come back writable)."""
    mode = path.stat().st_mode
    if not mode & stat.S_IWUSR:
        raise CvreproError(f"{path}: read-only (mode {stat.filemode(mode)}): refusing to replace a file you made "
                           f"read-only; `chmod u+w {path}` first if the corrections should go in")


def run(csv_path: Path, annotations: Path = ANNOTATIONS, dry_run: bool = False, *, task) -> dict:
    """Check the CSV against the labels file and, unless dry_run, rewrite it atomically. Returns the summary.

    task: the labels' task (a `cvrepro.tasks.Task`): the command line's `--task`, params.yaml's, or else
    `tasks.of_labels` of the file."""
    coco = read_json(annotations)
    rows = read_rows(csv_path)
    new, summary = apply_corrections(coco, rows, csv_path, task=task, labels_path=annotations)
    if not dry_run:
        _require_writable(Path(annotations))
        write_json(annotations, new)
    steps = next_steps(annotations, summary["actions"])
    return {**summary, "dry_run": dry_run, "written": not dry_run, "next_steps": steps}


# --------------------------------------------------------------------------- command line
