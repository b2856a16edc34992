"""The import and export drivers: source format <-> the project's data/raw + data/labels.

Import converts into a temporary folder beside data/raw and data/labels, validates
the result there (the snapshot stage's own checks where it supports the task) and
only then swaps it in, so a bad source changes nothing; then `dvc add`s both. The
swap is journaled (core/swap.py): at every instant each folder is whole (old or new), and a
kill part way is settled by the next command (`recover_imports`), never leaving a mix.
Selecting the imported dataset in conf/ is config/options.py's.
Export reads the workspace, or any git revision through DVC without a checkout (the
labels, the images and data/splits/splits.json), writes the splits (`formats.splits`)
and builds the output beside DEST before renaming it into place.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cvrepro.config import options
from cvrepro.config.params import IGNORE_INDEX, INVALID
from cvrepro.core import swap
from cvrepro.core.faults import kill_point
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, atomic_write_text, write_json
from cvrepro.core.paths import ANNOTATIONS, LABELS_DIR, PARAMS, RAW_DIR, SPLITS
from cvrepro.dataset.masks import decode_mask, mask_png
from cvrepro.formats.common import BoxCheck, Dataset, FileCheck, read_local, relative_to_src
from cvrepro.formats.registry import choose, plugin
from cvrepro.formats.splits import choose as choose_splits, summary as splits_summary

REPORT = "import_report.csv"  # under data/labels: every box --invalid dropped or clipped, every file dropped


def _ignore_index(root: Path) -> int:
    """`dataset.ignore_index` of the project's params.yaml (255 without one): the mask value not scored. Read as
    recorded, not typed: an import replaces the dataset, so the rest of a params.yaml composed for the old one
    (or before an upgrade) must not stop it; this one value is checked here."""
    from cvrepro.config.params import load_params, recorded

    if not (root / PARAMS).exists():
        return IGNORE_INDEX
    value = recorded(load_params(root / PARAMS), "dataset.ignore_index", IGNORE_INDEX)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise CvreproError(f"{PARAMS}: dataset.ignore_index must be an integer >= 1 and <= 255, got {value!r}")
    return value


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _summary(fmt: str, dataset: Dataset) -> dict:
    return {"format": fmt, "task": dataset.task, "images": len(dataset.images),
            "annotations": len(dataset.annotations), "classes": [c["name"] for c in dataset.categories]}


def _report_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "id", "problem", "action", "before", "after"])
    for r in rows:
        w.writerow([r["file"], r["id"], r["problem"], r["action"], json.dumps(r["before"]) if r["before"] else "",
                    json.dumps(r["after"]) if r["after"] else ""])
    return buf.getvalue()


# --------------------------------------------------------------------------- import


def write_project(dataset: Dataset, raw_dir: Path, labels_dir: Path, info: dict | None = None,
                  report: list[dict] = ()) -> None:
    """Lay the dataset out as docs/label-formats.md says: the images byte for byte under their own names, masks,
    annotations.json (with `info.cvrepro_import` when given) and the --invalid report."""
    for im in dataset.images:
        target = raw_dir / im["file_name"]
        if target.exists():
            raise CvreproError(f"{dataset.image_source[im['id']]}: imports as {im['file_name']}, "
                               "which another image already took")
        atomic_write_bytes(target, dataset.read(dataset.image_source[im["id"]]))
        if "mask_file" in im:
            source = dataset.mask_source[im["id"]]
            atomic_write_bytes(labels_dir / im["mask_file"], mask_png(decode_mask(dataset.read(source), source, stored=False)))
    index = dataset.index()
    if info:
        index = {"info": {"cvrepro_import": info}, **index}
    write_json(labels_dir / ANNOTATIONS.name, index)
    if report:
        atomic_write_text(labels_dir / REPORT, _report_csv(list(report)))


def _check_task(dataset: Dataset) -> None:
    """The label layout the dataset's task needs (docs/label-formats.md); snapshot checks the rest."""
    from cvrepro import tasks

    tasks.get(dataset.task, "format").check_import(dataset.images, dataset.annotations_by_image(),
                                                    dataset.image_source)


def _validate(task: str, raw_dir: Path, labels_dir: Path) -> None:
    from cvrepro import tasks
    from cvrepro.dataset.manifest import build_manifest

    try:
        build_manifest(raw_dir, labels_dir / ANNOTATIONS.name, task=tasks.get(task, "format"))
    except CvreproError as e:  # name the places the files will have, not the temporary folder
        message = str(e).replace(str(raw_dir), str(RAW_DIR)).replace(str(labels_dir), str(LABELS_DIR))
        raise CvreproError(f"the converted dataset fails snapshot validation; {RAW_DIR} and {LABELS_DIR} "
                           f"are unchanged:\n{message}") from None


WORK_PREFIX = ".import-"  # data/.import-*: ignored by git (data/.gitignore) and DVC (.dvcignore)


def recover_imports(root: Path) -> list[dict]:
    """Settle and remove the work folders of imports that died (call under the repository lock):
    swapped in completely, the new set stays; part way, the old set is put back (core/swap.py)."""
    done = []
    for work in sorted(Path(root, "data").glob(f"{WORK_PREFIX}*")):
        state = swap.settle_interrupted(work)
        if state.get("step") == "swapping":
            said = f"rolled back: {RAW_DIR} and {LABELS_DIR} hold the dataset they held before it"
        elif state.get("step") == "swapped":
            said = f"completed: {RAW_DIR} and {LABELS_DIR} hold the imported dataset"
            if state.get("dvc_add"):
                try:
                    _dvc_add(Path(root))
                    said += f", `dvc add {RAW_DIR} {LABELS_DIR}` done"
                except CvreproError as e:
                    said += f"; {e}"
        else:
            said = "removed: it had changed nothing"
        shutil.rmtree(work)
        done.append({"action": "import " + said.split(":")[0], "message": f"an interrupted import ({work.name}) was {said}"})
    return done


def _dvc_add(root: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "dvc", "add", str(RAW_DIR), str(LABELS_DIR)],
                         cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CvreproError(f"the dataset is in place but `dvc add {RAW_DIR} {LABELS_DIR}` failed "
                           f"(fix it and rerun that command):\n{(res.stderr or res.stdout).strip()}")


def import_dataset(fmt: str | None, src: Path, root: Path = Path("."), force: bool = False, dvc_add: bool = True,
                   annotations: Path | None = None, invalid: str = "fail", voc_coords: str = "plain",
                   name: str | None = None, select: bool = True, bad_files: str = "fail",
                   unlabelled: str = "negative", log=lambda line: None) -> dict:
    """Convert SRC (in format fmt; None: the one its layout shows, `registry.choose`) into root/data/raw +
    root/data/labels; return a summary (`detected`: the format and layout, when fmt was None).

    invalid: what to do with a zero-size or out-of-image box (formats.common.BoxCheck);
    bad_files, unlabelled: what to do with a whole file that cannot be imported, and with an image without
    annotations (formats.common.FileCheck); every box or file left out is a row of the import report, its
    path relative to SRC;
    select: describe the dataset in conf/dataset/<name>.yaml and select it (and its task) in conf/config.yaml;
    log: told `detected: ...` as soon as it is known (before the source is read, which may fail).
    """
    root, src = Path(root), Path(src)
    if not src.exists():
        raise CvreproError(f"{src}: not found")
    files = FileCheck(bad_files, unlabelled, src if src.is_dir() else src.parent)
    fmt, detected = _format_of(fmt, src, annotations, log)
    _check_request(root, fmt, force, dvc_add, annotations, voc_coords)
    name = options.option_name(name or src.resolve().name)
    if select:
        options.check_replaceable(root, name)
    check = BoxCheck(invalid)
    dataset = plugin(fmt).read(src, annotations=annotations, ignore_index=_ignore_index(root), check=check,
                               voc_coords=voc_coords, files=files)
    if not dataset.images:
        raise CvreproError(f"{src}: no images found (see docs/import-export.md for the {fmt} layout)")
    _check_task(dataset)
    info = {"format": fmt, "invalid": check.counts(), "bad_files": files.counts(negatives=False)}
    report = [{**r, "file": relative_to_src(r["file"], files.src)} for r in check.rows] + files.rows
    work = _put_in_place(root, dataset, info, report, dvc_add)
    summary = {**_summary(fmt, dataset), "invalid": check.counts(), "bad_files": files.counts(),
               **({"detected": detected} if detected else {})}
    if report:
        summary["report"] = str(LABELS_DIR / REPORT)
    try:
        if select and (root / options.CONF_CONFIG).is_file():
            summary["config"] = select_dataset(root, name, dataset, fmt)
        if dvc_add:
            kill_point("import:before-dvc-add")
            _dvc_add(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _format_of(fmt: str | None, src: Path, annotations: Path | None, log) -> tuple[str, str | None]:
    """(format, the format and layout detected, or None when fmt was given or implied by --annotations)."""
    if fmt is None and annotations is not None:
        return "coco", None  # --annotations names a COCO JSON: nothing to detect
    if fmt is not None:
        return fmt, None
    fmt, layout = choose(src)
    log(f"detected: {fmt} ({layout})")
    return fmt, f"{fmt} ({layout})"


def _check_request(root: Path, fmt: str, force: bool, dvc_add: bool, annotations: Path | None,
                   voc_coords: str) -> None:
    """The options and the project checked before the source is read."""
    if dvc_add and not (root / ".dvc").is_dir():
        raise CvreproError(f"{root.resolve()}: not a DVC project (no .dvc/); run `dvc init` or pass --no-dvc-add")
    if not force:
        for folder in (root / RAW_DIR, root / LABELS_DIR):
            if _holds_files(folder):
                raise CvreproError(f"{folder} already holds data; refusing to replace it (use --force)")
    if annotations is not None and fmt != "coco":
        raise CvreproError("--annotations applies to the coco format only")
    if voc_coords != "plain" and fmt != "voc":
        raise CvreproError("--voc-coords applies to the voc format only")


def _put_in_place(root: Path, dataset: Dataset, info: dict, report: list[dict], dvc_add: bool) -> Path:
    """Write the dataset into a work folder under data/, validate it there, and swap it in for data/raw and
    data/labels (core/swap.py). Returns the work folder, whose journal stays until `dvc add` is done."""
    raw_dir, labels_dir = root / RAW_DIR, root / LABELS_DIR
    (root / "data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=root / "data"))
    try:
        new_raw, new_labels = work / "raw", work / "labels"
        write_project(dataset, new_raw, new_labels, info, report)
        _validate(dataset.task, new_raw, new_labels)
        kill_point("import:converted")
        try:
            swap.swap_in([(new_raw, raw_dir), (new_labels, labels_dir)], work, {"dvc_add": dvc_add}, "import")
        except swap.SwapFailed as e:
            raise CvreproError(f"could not move the imported dataset into place ({e}); "
                               f"{RAW_DIR} and {LABELS_DIR} are unchanged") from None
        kill_point("import:swapped")
        for old in (new_raw, new_labels):  # the old set, now out of place; the journal stays until dvc add
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if swap.journal_step(work) != "swapping":  # else the old set may be in there: the next command settles it
            shutil.rmtree(work, ignore_errors=True)
        raise
    return work


# --------------------------------------------------------------------------- conf/dataset option


def _option_yaml(name: str, dataset: Dataset, fmt: str) -> str:
    import yaml

    from cvrepro.dataset.duplicates import DEFAULTS as DUPLICATES

    body = {"name": name, "notes": f"Imported with `cvrepro import {fmt}` ({len(dataset.images)} images).",
            "task": dataset.task, "annotations": ANNOTATIONS.name, "annotations_by_task": {},
            "classes": [c["name"] for c in sorted(dataset.categories, key=lambda c: c["id"])],
            "ignore_index": IGNORE_INDEX, "invalid": INVALID, "duplicates": dict(DUPLICATES)}
    return (f"{options.GENERATED} {fmt}: your dataset, selected in conf/config.yaml. Edit `notes` freely;\n"
            "# `task` and `classes` describe the data (category id i is classes[i - 1]). `invalid`: what\n"
            "# snapshot does with a bad box added later (fail, drop or clip; each listed in the manifest).\n"
            + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def select_dataset(root: Path, name: str, dataset: Dataset, fmt: str) -> dict:
    """Describe the imported dataset in conf/dataset/<name>.yaml and select it (config/options.py)."""
    return options.select_dataset(root, name, dataset.task, _option_yaml(name, dataset, fmt))


# --------------------------------------------------------------------------- export


def tasks_of(index: dict) -> set[str]:
    """Which tasks an index serves (the demo index serves detection and segmentation)."""
    from cvrepro import tasks

    return {t.name for t in tasks.serving(index)}


def _project_files(root: Path, rev: str | None):
    """(read, exists) of project files: the workspace, or git revision `rev` through DVC."""
    if rev is None:
        return (lambda path: read_local(str(root / path))), (lambda path: (root / path).is_file())
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(repo=str(root), rev=rev)
    except Exception as e:  # unknown revision, not a repository, ...
        raise CvreproError(f"cannot open revision {rev!r} of {root.resolve()}: {e}") from None

    def read(path: str) -> bytes:
        try:
            return fs.read_bytes(path)
        except Exception as e:  # missing file, data not in the cache nor a remote
            raise CvreproError(f"{path} at revision {rev!r}: cannot read ({type(e).__name__}: {e})") from None

    def exists(path: str) -> bool:
        """A file at `rev`; a DVC output that dvc.yaml declares but no dvc.lock recorded (the stage had not run)
        is not there, one recorded but missing from the cache is (and reading it says so)."""
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return False
        dvc = info.get("dvc_info") or {}
        return info.get("type") == "file" and (not dvc.get("isout") or "md5" in dvc)

    return read, exists


def project_dataset(root: Path = Path("."), rev: str | None = None, task: str | None = None,
                    files: tuple | None = None) -> Dataset:
    """The project's dataset (workspace, or git revision `rev` read through DVC) as a Dataset of `task`
    (default: the first the index serves, in the order detection, segmentation, classification)."""
    read = (files or _project_files(Path(root), rev))[0]
    where = f"{ANNOTATIONS}" + (f" at revision {rev!r}" if rev else "")
    try:
        index = json.loads(read(str(ANNOTATIONS)))
    except json.JSONDecodeError as e:
        raise CvreproError(f"{where}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(index, dict) or not isinstance(index.get("images"), list):
        raise CvreproError(f"{where}: expected a JSON object with 'images'")
    from cvrepro import tasks

    serving = [t.name for t in tasks.serving(index)]
    task = task or tasks.of_labels(index).name
    if task not in serving:
        raise CvreproError(f"{where} holds a {' and '.join(sorted(serving)) or 'empty'} dataset, not {task}")
    images = index["images"]
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise CvreproError(f"{where}: images[{i}] needs an integer 'id' and a string 'file_name' "
                               "(`cvrepro snapshot` checks the whole index)")
    return Dataset(task, index.get("categories") or [], images,
                   index.get("annotations") or [] if tasks.get(task).annotations_required else [],
                   {im["id"]: f"{RAW_DIR}/{im['file_name']}" for im in images},
                   {im["id"]: f"{LABELS_DIR}/{im['mask_file']}" for im in images if "mask_file" in im},
                   read)


def export_dataset(fmt: str, dest: Path, root: Path = Path("."), rev: str | None = None, splits: str = "auto",
                   **options) -> dict:
    """Write the project's dataset (or that of git revision `rev`) to DEST in format fmt, with its splits
    (`formats.splits`: auto, project, subsets or none); return a summary."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CvreproError(f"{dest}: exists and is not an empty directory; refusing to write into it")
    task = plugin(fmt).TASK
    files = _project_files(Path(root), rev)
    try:
        dataset = project_dataset(root, rev, task, files)
        source, assignment = choose_splits(splits, dataset, plugin(fmt).WRITES_SPLITS, fmt,
                                           lambda: files[0](str(SPLITS)) if files[1](str(SPLITS)) else None)
    except CvreproError as e:
        raise CvreproError(f"export --format {fmt}: {e}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
    try:
        out = work / "out"  # made by mkdir, not mkdtemp: the usual permissions, not 0700
        out.mkdir()
        plugin(fmt).write(dataset, out, splits=assignment, location=dest.resolve(), **options)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        out.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**_summary(fmt, dataset), "splits": splits_summary(source, assignment)}
