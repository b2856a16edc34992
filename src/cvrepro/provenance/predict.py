"""`cvrepro predict MODEL IMAGES --out DIR`: a model on a folder of images, written as results a program reads
and as annotation sets a labelling tool (CVAT, Label Studio) imports as pre-annotations.

MODEL is a release tag (`vX.Y.Z`, fetched and checked as `cvrepro.load_model` does), a folder holding
`model.pt`, `preprocessing.json` and `label_map.json` (`models/`, the project's current model), or a release
bundle folder (`models/releases/vX.Y.Z/`: `bundle.json` and `model.onnx`). The predictor is the one
`load_model` returns, so the release's own preprocessing and its task's post-processing apply.

What is written depends on the task (`Task.prediction_outputs`, `Task.prediction_labels`); the annotation sets
are the format plug-ins' own writers (formats/<name>), fed a `Dataset` of the predictions. An image that does
not decode is named on stderr, skipped and listed in `predict_report.csv`. Everything is written into a
temporary folder beside DIR and renamed into place at the end: a killed run leaves no DIR (fault point
`predict:written`), and the next run removes the dead run's temporary folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cvrepro.core.faults import kill_point
from cvrepro.core.fileio import CvreproError, atomic_write_text, read_json, sha256_file, write_json
from cvrepro.core.paths import PREPROCESSING, WEIGHTS
from cvrepro.formats.common import Dataset, by_stem, contiguous_names, find_images, read_local
from cvrepro.formats.registry import PLUGINS, plugin
from cvrepro.learning.predictor import Predictor

RUNTIMES = ("torch", "onnx")
RESULTS, CSV, YOLO_TXT = "results.json", "predictions.csv", "yolo-txt"
REPORT, SUMMARY = "predict_report.csv", "predict.json"
TAG = re.compile(r"^v\d+\.\d+\.\d+$")
WORK_INFIX = ".predict-"  # DIR's temporary sibling: .<DIR name>.predict-<pid>


# --------------------------------------------------------------------------- the model


def load(model: str, runtime: str | None = None, device: str = "auto", threads: int = 0,
         root: Path = Path(".")) -> tuple[Predictor, dict]:
    """The predictor of MODEL and a description of it ({model, kind, runtime, device}). runtime None: torch,
    except for a bundle folder, which holds the ONNX model only."""
    if runtime not in (None, *RUNTIMES):
        raise CvreproError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    folder = Path(model)
    if TAG.match(model) and not folder.is_dir():
        kind = "release"
    elif (folder / "bundle.json").is_file():
        kind = "bundle"
    elif (folder / WEIGHTS.name).is_file() and (folder / PREPROCESSING.name).is_file():
        kind = "models"
    else:
        raise CvreproError(f"{model}: not a release tag (vX.Y.Z), a model folder with {WEIGHTS.name} and "
                           f"{PREPROCESSING.name} (models/), nor a release bundle folder with bundle.json "
                           "(models/releases/vX.Y.Z/)")
    runtime = runtime or ("onnx" if kind == "bundle" else "torch")
    if runtime == "onnx" and device not in ("auto", "cpu"):
        raise CvreproError(f"--device {device}: --runtime onnx runs on the CPU (ONNX Runtime's CPU provider); "
                           "use --runtime torch for a GPU")
    if runtime == "torch" and threads > 0:
        import torch

        torch.set_num_threads(threads)
    predictor = _LOADERS[kind](model, runtime, device, threads, Path(root))
    where = "cpu" if runtime == "onnx" else str(predictor._device())
    return predictor, {"model": model, "kind": kind, "runtime": runtime, "device": where,
                       "task": predictor.task.name}


def _release(model: str, runtime: str, device: str, threads: int, root: Path) -> Predictor:
    from cvrepro.provenance.loading import load_model

    return load_model(model, repo=root, runtime=runtime, threads=threads, device=device)


def _models(model: str, runtime: str, device: str, threads: int, root: Path) -> Predictor:
    """A trained model's folder; with the onnx runtime it is exported first, into a temporary file, as a
    release would export it."""
    from cvrepro.learning.artifacts import load_predictor
    from cvrepro.learning.devices import resolve_device

    folder = Path(model)
    if runtime == "torch":
        net, spec, label_map = load_predictor(folder, resolve_device(device))
        return Predictor(net, spec, label_map, str(folder), {})
    from cvrepro.provenance.export import OnnxModel, export_onnx

    net, spec, label_map = load_predictor(folder)
    with tempfile.TemporaryDirectory(prefix="cvrepro-predict-") as tmp:
        export_onnx(net, int(spec["input"]["size"]), Path(tmp) / "model.onnx")
        onnx = OnnxModel(Path(tmp) / "model.onnx", threads=threads)  # the session holds the graph
    return Predictor(onnx, spec, label_map, str(folder), {})


def _bundle(model: str, runtime: str, device: str, threads: int, root: Path) -> Predictor:
    """A release bundle: model.onnx (checked against bundle.json's sha256) and the input contract of
    bundle.json. It has no model config, so it cannot be rebuilt in PyTorch."""
    from cvrepro.learning.artifacts import INPUT_LETTERBOX
    from cvrepro.provenance.export import ONNX_NAME, OnnxModel

    folder = Path(model)
    if runtime == "torch":
        raise CvreproError(f"{folder}: a release bundle holds the ONNX model only; use --runtime onnx, or the "
                           "release tag (vX.Y.Z) for PyTorch")
    bundle = read_json(folder / "bundle.json")
    onnx = folder / ONNX_NAME
    if not onnx.is_file():
        raise CvreproError(f"{onnx}: not found (a bundle's model.onnx is tracked by DVC: `dvc pull` it)")
    want = next((sha for path, sha in (bundle.get("files") or {}).items() if Path(path).name == ONNX_NAME), None)
    if want and sha256_file(onnx) != want:
        raise CvreproError(f"{onnx}: sha256 differs from bundle.json's {want}: the file was altered")
    try:
        shape, resize = bundle["input_spec"]["shape"], bundle["input_spec"]["resize"]
        spec = {"task": bundle["task"], "input": {"size": int(shape[-1]), "resize": resize}}
        label_map = bundle["label_map"]
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise CvreproError(f"{folder / 'bundle.json'}: no input contract ({type(e).__name__}: {e})") from None
    if resize == INPUT_LETTERBOX:
        spec["input"]["fit"] = "letterbox"
    return Predictor(OnnxModel(onnx, threads=threads), spec, label_map, bundle.get("version", str(folder)), {})


_LOADERS = {"release": _release, "models": _models, "bundle": _bundle}


# --------------------------------------------------------------------------- outputs


def choose_outputs(task, formats: str | None) -> list[str]:
    """The outputs to write: `formats` (comma-separated) or every one the task has."""
    from cvrepro import tasks

    offered = list(task.prediction_outputs)
    if not offered:
        supported = [name for name in tasks.names() if tasks.get(name).prediction_outputs]
        raise CvreproError(f"cvrepro predict does not support the {task.name} task yet "
                           f"(it supports {', '.join(supported)})")
    if not formats:
        return offered
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in offered]
    if unknown or not chosen:
        raise CvreproError(f"--formats {formats}: {', '.join(unknown) or 'nothing chosen'}; "
                           f"a {task.name} model writes {', '.join(offered)}")
    return list(dict.fromkeys(chosen))


def _categories(label_map: dict[int, str]) -> list[dict]:
    return [{"id": i, "name": name} for i, name in sorted(label_map.items())]


def _check_outputs(outputs: list[str], categories: list[dict], scratch: Path) -> None:
    """Refuse, before any prediction, an output the label map cannot be written in (YOLO numbers classes by
    position): each writer runs once on no image."""
    empty = Dataset("", categories, [], [])
    for i, name in enumerate(outputs):
        if name in PLUGINS:
            plugin(name).write(empty, scratch / str(i))
        elif name == YOLO_TXT:
            contiguous_names(empty, YOLO_TXT)


def _results(dataset: Dataset, dest: Path) -> None:
    """COCO results: one entry per prediction with image_id, file_name, category_id, score (and bbox)."""
    names = {im["id"]: im["file_name"] for im in dataset.images}
    rows = [{"image_id": a["image_id"], "file_name": names[a["image_id"]],
             **{k: a[k] for k in ("category_id", "bbox", "score") if k in a}} for a in dataset.annotations]
    atomic_write_text(dest / RESULTS, "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")  # a line each


def _yolo_txt(dataset: Dataset, dest: Path) -> None:
    """One text file per image (none detected: empty): `class cx cy w h confidence`, normalised, class =
    category id - 1 (Ultralytics' `save_conf` layout)."""
    contiguous_names(dataset, YOLO_TXT)
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        lines = []
        for a in by_image[im["id"]]:
            x, y, w, h = a["bbox"]
            values = ((x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"])
            lines.append(" ".join([str(a["category_id"] - 1), *(f"{v:.6f}" for v in values), f"{a['score']:.6f}"]))
        stem = im["file_name"].rsplit(".", 1)[0]
        atomic_write_text(dest / YOLO_TXT / f"{stem}.txt", "".join(f"{line}\n" for line in lines))


def _csv(dataset: Dataset, dest: Path) -> None:
    names, files = dataset.names(), {im["id"]: im["file_name"] for im in dataset.images}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file_name", "image_id", "category_id", "class_name", "score"])
    for a in dataset.annotations:
        w.writerow([files[a["image_id"]], a["image_id"], a["category_id"], names.get(a["category_id"], ""),
                    a["score"]])
    atomic_write_text(dest / CSV, buf.getvalue())


_WRITERS = {"results": _results, YOLO_TXT: _yolo_txt, "csv": _csv}


def write_outputs(dataset: Dataset, outputs: list[str], dest: Path) -> None:
    for name in outputs:
        if name in PLUGINS:
            plugin(name).write(dataset, dest / name)
        else:
            _WRITERS[name](dataset, dest)


def _report(rows: list[tuple[str, str]], dest: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "problem"])
    w.writerows(rows)
    atomic_write_text(dest / REPORT, buf.getvalue())


# --------------------------------------------------------------------------- the run


def _image_rows(images: dict[str, Path]) -> list[dict]:
    return [{"id": i, "file_name": rel, "path": path} for i, (rel, path) in enumerate(images.items(), start=1)]


def _read(path: Path):
    """The image as the predictor reads it, or the problem that stops it (named in the report)."""
    from PIL import UnidentifiedImageError

    from cvrepro.dataset.images import load_image_rgb

    try:
        return load_image_rgb(path), None
    except UnidentifiedImageError:
        return None, "unreadable: not an image format PIL can identify"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on broken files
        return None, f"unreadable or truncated image ({type(e).__name__}: {e})"


def run_predictions(predictor: Predictor, rows: list[dict], batch_size: int, score_thresh: float,
                    skipped: list[tuple[str, str]]) -> Dataset:
    """Predict every image of `rows`, `batch_size` at a time, with a progress bar on stderr; an image that
    does not decode is named on stderr and added to `skipped`. Returns the predictions as a Dataset."""
    from tqdm import tqdm

    images, annotations = [], []
    with tqdm(total=len(rows), desc="predict", unit="img", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(rows), batch_size):
            batch = []
            for row in rows[start:start + batch_size]:
                pixels, problem = _read(row["path"])
                if problem:
                    print(f"skipped {row['path']}: {problem}", file=sys.stderr)
                    skipped.append((str(row["path"]), problem))
                else:
                    batch.append((row, pixels))
            found = predictor.predict_batch([pixels for _, pixels in batch], score_thresh) if batch else []
            for (row, pixels), prediction in zip(batch, found):
                images.append({"id": row["id"], "file_name": row["file_name"], "width": pixels.width,
                               "height": pixels.height})
                for label in predictor.task.prediction_labels(prediction, pixels.width, pixels.height):
                    annotations.append({"id": len(annotations) + 1, "image_id": row["id"], **label})
            bar.update(len(rows[start:start + batch_size]))
    return Dataset(predictor.task.name, _categories(predictor.class_names), images, annotations,
                   {row["id"]: str(row["path"]) for row in rows}, {}, read_local)


def _clear_dead_runs(out: Path) -> None:
    """Remove the temporary folders of runs into `out` that were killed (their process is gone)."""
    for work in out.parent.glob(f".{out.name}{WORK_INFIX}*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_places(images_dir: Path, out: Path, force: bool) -> dict[str, Path]:
    if not images_dir.is_dir():
        raise CvreproError(f"{images_dir}: not a folder of images")
    if out.resolve().is_relative_to(images_dir.resolve()):
        raise CvreproError(f"--out {out}: inside {images_dir}; the image copies of the annotation sets would "
                           "be read as input by the next run: choose a folder outside it")
    if images_dir.resolve().is_relative_to(out.resolve()):
        raise CvreproError(f"--out {out}: holds {images_dir}; replacing it would delete the images: choose a "
                           "folder outside it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise CvreproError(f"--out {out}: exists and is not an empty folder; refusing to write into it "
                           "(--force replaces it)")
    images = find_images(images_dir)
    if not images:
        raise CvreproError(f"{images_dir}: no images found (extensions .jpg .jpeg .png .bmp .tif .tiff .webp, "
                           "any depth)")
    return images


def predict_folder(predictor: Predictor, about: dict, images_dir: Path, out: Path, formats: str | None = None,
                   batch_size: int = 8, score_thresh: float = 0.3, force: bool = False) -> dict:
    """Predict every image under `images_dir` and write the outputs into `out` as a whole; returns the summary
    (also written as predict.json)."""
    if batch_size < 1:
        raise CvreproError(f"--batch-size {batch_size}: must be at least 1")
    if not 0.0 <= score_thresh <= 1.0:
        raise CvreproError(f"--score-thresh {score_thresh}: must be between 0 and 1")
    images_dir, out = Path(images_dir), Path(out)
    outputs = choose_outputs(predictor.task, formats)
    images = _check_places(images_dir, out, force)
    if YOLO_TXT in outputs or "yolo" in outputs:  # one label file a stem: x.jpg and x.png would share x.txt
        by_stem(images, images_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_runs(out)
    work = out.parent / f".{out.name}{WORK_INFIX}{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        new = work / "out"
        new.mkdir(parents=True)  # mkdir, not mkdtemp: the usual permissions, not 0700
        _check_outputs(outputs, _categories(predictor.class_names), work / "check")
        started, skipped = time.perf_counter(), []
        dataset = run_predictions(predictor, _image_rows(images), batch_size, score_thresh, skipped)
        seconds = time.perf_counter() - started
        if not dataset.images:
            raise CvreproError(f"{images_dir}: none of the {len(images)} images could be read (the first: "
                               f"{skipped[0][0]}: {skipped[0][1]}); nothing written")
        write_outputs(dataset, outputs, new)
        _report(skipped, new)
        summary = {**about, "images": len(images), "predicted": len(dataset.images), "skipped": len(skipped),
                   "predictions": len(dataset.annotations), "outputs": outputs, "score_thresh": score_thresh,
                   "batch_size": batch_size, "seconds": round(seconds, 3),
                   "images_per_s": round(len(dataset.images) / seconds, 2) if seconds else None,
                   "label_map": {str(k): v for k, v in sorted(predictor.class_names.items())}}
        write_json(new / SUMMARY, summary)
        kill_point("predict:written")
        _put_in_place(new, out, work, force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _put_in_place(new: Path, out: Path, work: Path, force: bool) -> None:
    """Rename the finished folder to `out`. Without --force only onto nothing or an empty folder (the rename
    itself refuses a folder another run filled meanwhile); with --force an existing `out` is moved aside
    first (a kill between the two renames leaves no `out`: the previous output is then gone)."""
    if force and out.exists():
        out.rename(work / "old")
    try:
        new.rename(out)
    except OSError as e:
        raise CvreproError(f"--out {out}: written meanwhile by another run ({e.strerror or e}); this run's "
                           "output is discarded (--force replaces it)") from None
