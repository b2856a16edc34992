"""`cvrepro.load_model("v0.2.0")`: a released model, ready to predict on an image.

The weights, label map and pre/post-processing spec are fetched through DVC at
the release's tag (from the local cache, or the remote if the cache lacks them)
and checked against the sha256 in the release record before use. The predictor
applies the release's own preprocessing (recorded in `preprocessing.json`), so a
release keeps predicting the same way whatever the current code's defaults are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .io import CvreproError, sha256_file
from .paths import LABEL_MAP, PREPROCESSING, WEIGHTS

_FILES = (WEIGHTS, LABEL_MAP, PREPROCESSING)


class Predictor:
    """A release's model for one image (a path, a PIL image or an HxWx3 uint8 array).

    detection: a list of {box (xyxy, original pixels), score, label, class_name};
    segmentation: {mask (HxW class ids at the original size, 0 = background), class_names};
    classification: {label, class_name, score, scores (class name -> probability)}.
    """

    def __init__(self, model, spec: dict, label_map: dict, version: str, record: dict):
        self.model, self.spec, self.version, self.record = model, spec, version, record
        self.task = spec.get("task", "detection")
        self.class_names = {int(k): v for k, v in label_map.items()}

    def preprocess(self, image):
        """The release's input transform: RGB, stretch to size x size (bilinear), uint8 CHW."""
        from PIL import Image, ImageOps

        if isinstance(image, (str, Path)):
            with Image.open(image) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
        elif isinstance(image, np.ndarray):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        image = image.convert("RGB")
        size = int(self.spec["input"]["size"])
        resized = np.asarray(image.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
        return resized, (size / image.width, size / image.height)

    def __call__(self, image, score_threshold: float = 0.3):
        import torch

        from .engine import to_tensor

        pixels, (sx, sy) = self.preprocess(image)
        with torch.no_grad():
            det = self.model([to_tensor(pixels)])[0]
        if self.task == "segmentation":
            size = (round(pixels.shape[1] / sy), round(pixels.shape[2] / sx))  # original (height, width)
            scores = torch.nn.functional.interpolate(det["scores"][None], size=size, mode="bilinear",
                                                     align_corners=False)[0]
            return {"mask": scores.argmax(0).numpy().astype(np.uint8),
                    "class_names": {0: "background", **self.class_names}}
        if self.task == "classification":
            probs = det["scores"].tolist()
            label = int(det["label"])
            return {"label": label, "class_name": self.class_names.get(label, str(label)), "score": probs[label],
                    "scores": {name: probs[i] for i, name in self.class_names.items() if i < len(probs)}}
        out = []
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            if score < score_threshold or int(label) not in self.class_names:
                continue  # ids outside the class map are not classes (see evaluate.known_labels_only)
            x1, y1, x2, y2 = box
            out.append({"box": [x1 / sx, y1 / sy, x2 / sx, y2 / sy], "score": float(score),
                        "label": int(label), "class_name": self.class_names[int(label)]})
        return out

    predict = __call__


def fetch_release_files(version: str, repo: str | Path = ".", remote: str | None = None,
                        dest: Path | None = None, files: tuple[Path, ...] = _FILES) -> tuple[Path, dict]:
    """Download a model release's `files` into `dest`, each checked against the release
    record's sha256 (a file without one is refused); returns (dest, record)."""
    import dvc.api

    from .registry import record_at, record_path

    repo = Path(repo)
    record = record_at(repo, version)
    dest = Path(dest or tempfile.mkdtemp(prefix=f"cvrepro-{version}-"))
    dest.mkdir(parents=True, exist_ok=True)
    for rel in files:
        target = dest / rel.name
        try:
            with dvc.api.open(rel.as_posix(), repo=str(repo), rev=version, remote=remote, mode="rb") as src, \
                    open(target, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
        except Exception as e:  # DVC's errors vary (no remote, missing in cache and remote, ...)
            raise CvreproError(f"{rel} at {version}: cannot fetch it through DVC ({type(e).__name__}: {e}); "
                               "DVC also calls a file missing when the remote's copy fails its md5 check") from None
        want = record.get("artifacts", {}).get(str(rel))
        if not want:
            raise CvreproError(f"{record_path(version)} at {version}: artifacts has no sha256 for {rel}")
        got = sha256_file(target)
        if got != want:
            raise CvreproError(f"{rel} at {version}: sha256 {got} differs from the release record's {want}: "
                               "the stored copy was altered")
    return dest, record


def load_model(version: str, repo: str | Path = ".", remote: str | None = None) -> Predictor:
    """The released model `version` (a `vX.Y.Z` tag of `repo`) as a Predictor in eval mode."""
    from .stages.train import load_predictor

    with tempfile.TemporaryDirectory(prefix=f"cvrepro-{version}-") as tmp:
        folder, record = fetch_release_files(version, repo, remote, Path(tmp))
        model, spec, label_map = load_predictor(folder)
    return Predictor(model, spec, label_map, version, record)
