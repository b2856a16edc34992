"""The shippable part of a model release: ONNX and safetensors beside `model.pt`, proven equal.

`cvrepro release model` calls `make_bundle`, which writes `models/releases/<tag>/`:
- `model.onnx`: the model with its input scaling and mean/std normalisation in the graph, so a
  consumer only resizes (stretch to size x size, bilinear) and feeds uint8 RGB NCHW pixels;
- `model.safetensors`: the same weights as `model.pt`, loadable without pickle;
- `bundle.json`: input and output contract, opset, label map, sha256 of each file, and the parity
  report (also in the release record under `export`);
- `model_card.md` (provenance/modelcard.py).

The parity check runs ONNX Runtime and PyTorch on up to 64 validation images of `data/processed/val`
and compares what a consumer sees: detection boxes (input pixels), labels and scores; the
segmentation class scores and per-pixel labels; the classification scores and label. Detections
are paired one-to-one as the same object, and one may be missing only on the model's own score or
count cut (provenance/parity.py; docs/safety.md). A bundle outside `TOLERANCE` is refused with the
numbers, before anything is committed. The two ONNX files are tracked with `dvc add` and pushed with
the release; `load_model(tag, runtime="onnx")` fetches them through DVC and checks them against the
record's sha256.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np

from cvrepro.core.fileio import CvreproError, read_json, sha256_file, write_json
from cvrepro import tasks
from cvrepro.core.paths import MODEL_RELEASES_DIR, PREPROCESSING, WEIGHTS, processed_split
from cvrepro.provenance.parity import match_image

OPSET = 17
INPUT_SCALE = 255.0  # uint8 -> [0, 1] inside the graph, as engine.to_tensor does for PyTorch
ONNX_NAME, SAFETENSORS_NAME, BUNDLE_NAME, CARD_NAME = "model.onnx", "model.safetensors", "bundle.json", "model_card.md"
# What "the same predictions" means. Scores are probabilities (or detection confidences) in [0, 1];
# boxes are in input pixels (size x size). An argmax may flip where two classes tie within the score
# tolerance, so per-pixel labels must agree on all but 0.1 % of the pixels.
TOLERANCE = {"score_abs": 1e-3, "box_px": 0.5, "label_agreement": 0.999}
PARITY_IMAGES = 64  # validation images compared at release time (all of them if fewer)


def bundle_dir(tag: str) -> Path:
    return MODEL_RELEASES_DIR / tag


def bundle_files(tag: str) -> dict[str, Path]:
    d = bundle_dir(tag)
    return {"onnx": d / ONNX_NAME, "safetensors": d / SAFETENSORS_NAME}


# --------------------------------------------------------------------------- the graph


def _graph(model):
    """The model as an ONNX-traceable module: uint8 NCHW in, named tensors out."""
    import torch

    class Dense(torch.nn.Module):  # segmentation, classification: DenseTask, any batch size
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            probs = self.inner.logits(images.float() / INPUT_SCALE).softmax(dim=1)
            return probs, probs.argmax(dim=1)

    class Boxes(torch.nn.Module):  # detection: torchvision's transform + post-processing, one image a call
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            out = self.inner([images[0].float() / INPUT_SCALE])[0]
            return out["boxes"], out["scores"], out["labels"]

    if hasattr(model, "logits"):
        return Dense(model), ["scores", model.target_key], True
    return Boxes(model), ["boxes", "scores", "labels"], False


def export_onnx(model, size: int, path: Path) -> dict:
    """Write `model` (eval mode) as ONNX at `path`; returns the graph's contract."""
    import torch

    graph, outputs, dynamic = _graph(model)
    graph.eval()
    example = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in outputs}} if dynamic else None
    tmp = path.with_name(path.name + ".tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings on torchvision's shape arithmetic: noise to a user
            torch.onnx.export(graph, (example,), str(tmp), input_names=["images"], output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        tmp.replace(path)
    except CvreproError:
        raise
    except Exception as e:  # the exporter's errors are many and long: one line, naming the model
        tmp.unlink(missing_ok=True)
        raise CvreproError(f"{path}: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return {"input": "images", "outputs": outputs, "batch": "dynamic" if dynamic else 1}


def save_safetensors(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


class OnnxModel:
    """An ONNX Runtime session behind the PyTorch model's calling convention (a list of [3,S,S] float
    tensors in [0, 1] -> a list of per-image dicts of tensors), so the Predictor's task post-processing
    is the same for both runtimes."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CvreproError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.batched = self.session.get_inputs()[0].shape[0] != 1

    def eval(self):
        return self

    def __call__(self, images):
        import torch

        pixels = np.stack([np.rint(np.asarray(im, dtype=np.float32) * INPUT_SCALE) for im in images]).astype(np.uint8)
        chunks = [pixels] if self.batched else [pixels[i : i + 1] for i in range(len(pixels))]
        out = []
        for chunk in chunks:
            res = self.session.run(None, {"images": chunk})
            if self.batched:
                out += [{n: torch.from_numpy(np.asarray(r[i])) for n, r in zip(self.outputs, res)} for i in range(len(chunk))]
            else:
                out.append({n: torch.from_numpy(r) for n, r in zip(self.outputs, res)})
        return out


# --------------------------------------------------------------------------- parity


def _predict(model, images: np.ndarray, batch: int = 8) -> list[dict[str, np.ndarray]]:
    import torch

    from cvrepro.learning.engine import to_tensor

    out = []
    with torch.no_grad():
        for a in range(0, len(images), batch):
            out += [{k: v.numpy() for k, v in o.items()} for o in model([to_tensor(im) for im in images[a : a + batch]])]
    return out


def compare(ref: list[dict], got: list[dict], tolerance: dict = TOLERANCE, score_floor: float = 0.0,
            max_detections: int | None = None) -> dict:
    """The parity report of two runtimes' outputs on the same images; `ok` within `tolerance`.
    Detection: `score_floor` and `max_detections` are the model's own cuts, where a detection may be
    missing from one side (`excused_unmatched`; provenance/parity.py)."""
    report = {"images": len(ref), "tolerance": dict(tolerance), "max_score_diff": 0.0}
    if ref and "boxes" in ref[0]:
        report.update(max_box_diff_px=0.0, unmatched_detections=0, excused_unmatched=0, images_at_cap=0,
                      detections=int(sum(len(r["scores"]) for r in ref)))
        for r, g in zip(ref, got):
            res = match_image(r, g, tolerance, score_floor, max_detections)
            report["max_box_diff_px"] = round(max(report["max_box_diff_px"], res.box_diff), 6)
            report["max_score_diff"] = max(report["max_score_diff"], res.score_diff)
            report["unmatched_detections"] += res.unmatched
            report["excused_unmatched"] += res.excused
            report["images_at_cap"] += int(res.at_cap)
        ok = (report["max_box_diff_px"] <= tolerance["box_px"] and report["unmatched_detections"] == 0)
    else:
        key = next(k for k in ref[0] if k != "scores") if ref else "label"
        same = total = 0
        for r, g in zip(ref, got):
            report["max_score_diff"] = max(report["max_score_diff"], float(np.abs(r["scores"] - g["scores"]).max()))
            same += int((np.asarray(r[key]) == np.asarray(g[key])).sum())
            total += int(np.asarray(r[key]).size)
        report[f"{key}_agreement"] = round(same / max(total, 1), 6)
        ok = report[f"{key}_agreement"] >= tolerance["label_agreement"]
    report["max_score_diff"] = float(f"{report['max_score_diff']:.3g}")
    report["ok"] = bool(ok and report["max_score_diff"] <= tolerance["score_abs"])
    return report


def parity(model, onnx_path: Path, images: np.ndarray, tolerance: dict = TOLERANCE) -> dict:
    """Compare PyTorch and ONNX Runtime on `images` (uint8 [N,3,S,S]); detection models' own score threshold and
    detection cap (torchvision's `score_thresh`, `detections_per_img`) bound where a detection may be missing."""
    cap = getattr(model, "detections_per_img", None)
    return compare(_predict(model, images), _predict(OnnxModel(onnx_path), images), tolerance,
                   float(getattr(model, "score_thresh", 0.0)), int(cap) if cap else None)


def format_parity(report: dict) -> str:
    skip = {"ok", "tolerance", "split"}
    return ", ".join(f"{k} {v}" for k, v in report.items() if k not in skip) + f" (tolerance {report['tolerance']})"


# --------------------------------------------------------------------------- the bundle


def make_bundle(root: Path, record: dict, previous: dict | None) -> tuple[dict, list[Path]]:
    """Write and check the release's bundle; returns (the record's `export` field, the git paths to
    commit). Refuses (CvreproError, nothing left behind) when the ONNX graph fails parity."""
    import importlib.metadata as md

    from cvrepro.learning.artifacts import load_predictor
    from cvrepro.provenance import modelcard

    root, tag = Path(root), record["version"]
    folder = root / bundle_dir(tag)
    if folder.exists():
        raise CvreproError(f"{bundle_dir(tag)} already exists: a leftover of an interrupted release? "
                           f"Remove it if no tag {tag} exists (docs/safety.md)")
    folder.mkdir(parents=True)
    try:
        model, spec, label_map = load_predictor(root / WEIGHTS.parent)
        size = int(spec["input"]["size"])
        files = bundle_files(tag)
        contract = export_onnx(model, size, root / files["onnx"])
        save_safetensors(model, root / files["safetensors"])
        split, images = parity_images(root)
        report = {"split": split, **parity(model, root / files["onnx"], images)}
        if not report["ok"]:
            raise CvreproError(f"{files['onnx']}: the ONNX export does not predict what the PyTorch model predicts "
                               f"on {report['images']} {split} images: {format_parity(report)}; release refused")
        export = {
            "format": "onnx", "opset": OPSET, **contract,
            "runtime": {"onnx": md.version("onnx"), "onnxruntime": md.version("onnxruntime"),
                        "torch": md.version("torch")},
            "input_spec": {"shape": ["batch" if contract["batch"] == "dynamic" else 1, 3, size, size],
                           "dtype": "uint8", "layout": "NCHW, RGB", "resize": spec["input"]["resize"],
                           "in_graph": f"float, / {INPUT_SCALE:g}, (x - mean) / std with mean "
                                       f"{spec['input']['mean']} and std {spec['input']['std']}"},
            "output_spec": output_meaning(contract["outputs"], size),
            "files": {str(p): sha256_file(root / p) for p in files.values()},
            "parity": report,
        }
        task = tasks.of_record(spec, str(PREPROCESSING)).name
        write_json(folder / BUNDLE_NAME, {"version": tag, "task": task, "label_map": label_map,
                                          "source_weights_sha256": record["artifacts"][str(WEIGHTS)], **export})
        modelcard.write(root, record | {"export": export}, previous, folder / CARD_NAME)
        _dvc_add(root, list(files.values()))
    except BaseException:
        discard(root, tag)
        raise
    tracked = [folder / BUNDLE_NAME, folder / CARD_NAME, folder / ".gitignore",
               *(root / p.with_name(p.name + ".dvc") for p in files.values())]
    return export, [p.relative_to(root) for p in tracked]


def parity_images(root: Path) -> tuple[str, np.ndarray]:
    """Up to PARITY_IMAGES preprocessed images of the validation split (test, then train, if it is empty):
    a parity check on no image would prove nothing, so none at all is an error."""
    for split in ("val", "test", "train"):
        path = root / processed_split(split) / "images.npy"
        if path.exists():
            images = np.load(path, mmap_mode="r")[:PARITY_IMAGES]
            if len(images):
                return split, np.asarray(images)
    raise CvreproError(f"{processed_split('val')}/images.npy: no preprocessed image to check the ONNX export on; "
                       "run `dvc repro` first")


def output_meaning(outputs: list[str], size: int) -> dict[str, str]:
    known = {
        "boxes": f"float32 [n, 4]: x1, y1, x2, y2 in input pixels ({size} x {size}); divide x by size / width "
                 "and y by size / height for the original image",
        "scores": "float32: detection confidence [n], or class probabilities [batch, classes(, H, W)]",
        "labels": "int64 [n]: category ids of the label map",
        "mask": f"int64 [batch, {size}, {size}]: the category id of each pixel, 0 = background (for the original "
                "size, resize `scores` bilinearly and take the argmax, as the Python predictor does)",
        "label": "int64 [batch]: the category id with the highest probability",
    }
    return {n: known.get(n, "") for n in outputs}


def _dvc_add(root: Path, paths: list[Path]) -> None:
    from cvrepro.core.vcs import dvc

    dvc(root, "add", "-q", *(p.as_posix() for p in paths))


def discard(root: Path, tag: str) -> None:
    """Remove an unpublished bundle (a refused or failed release leaves nothing behind): its files, and
    what `dvc add` staged (core.autostage)."""
    from cvrepro.core.vcs import git

    git(Path(root), "reset", "-q", "--", bundle_dir(tag).as_posix(), check=False)
    shutil.rmtree(Path(root) / bundle_dir(tag), ignore_errors=True)


def read_bundle(folder: Path) -> dict:
    return read_json(Path(folder) / BUNDLE_NAME)


