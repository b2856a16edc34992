"""A trained model ready to predict on one image: the release's own preprocessing (recorded in
`preprocessing.json`), the model, and its task's post-processing to original-image coordinates.
`cvrepro.load_model` (provenance/loading.py) builds one from a release."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvrepro.core.paths import PREPROCESSING


class Predictor:
    """A release's model for one image (a path, a PIL image or an HxWx3 uint8 array).

    detection: a list of {box (xyxy, original pixels), score, label, class_name};
    segmentation: {mask (HxW class ids at the original size, 0 = background), class_names};
    classification: {label, class_name, score, scores (class name -> probability)}.
    """

    def __init__(self, model, spec: dict, label_map: dict, version: str, record: dict):
        self.model, self.spec, self.version, self.record = model, spec, version, record
        from cvrepro import tasks

        self.task = tasks.of_record(spec, f"{PREPROCESSING} of {version}")
        self.class_names = {int(k): v for k, v in label_map.items()}

    def preprocess(self, image):
        """The release's input transform: RGB, stretched or letterboxed to size x size (bilinear), uint8 CHW,
        and the (sx, sy) that map original pixels to it."""
        pixels, scale, _ = self._prepare(image)
        return pixels, scale

    def _prepare(self, image):
        """`preprocess`, plus the (height, width) of the part of the input the image fills (all of it when
        stretched; a letterbox's padding is not the image): what postprocessing maps back."""
        from PIL import Image

        from cvrepro.dataset.images import load_image_rgb

        from cvrepro.dataset.processed import fit_image, fitted

        if isinstance(image, (str, Path)):
            image = load_image_rgb(image)  # the one reader: EXIF orientation applied, as in training
        elif isinstance(image, np.ndarray):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        image = image.convert("RGB")
        size, mode = int(self.spec["input"]["size"]), self.spec["input"].get("fit", "stretch")
        w, h = fitted(image.width, image.height, size, mode)
        return fit_image(image, image.size, size, mode), (w / image.width, h / image.height), (h, w)

    def __call__(self, image, score_threshold: float = 0.3):
        return self.predict_batch([image], score_threshold)[0]

    predict = __call__

    def predict_batch(self, images: list, score_threshold: float = 0.3) -> list:
        """`__call__` on several images in one forward pass (`cvrepro predict --batch-size`)."""
        import torch

        from cvrepro.learning.engine import to_tensor

        prepared = [self._prepare(image) for image in images]
        device = self._device()
        with torch.no_grad():
            outs = self.model([to_tensor(pixels).to(device) for pixels, _, _ in prepared])
        return [self.task.postprocess({k: v.cpu() for k, v in out.items()}, content, scale, self.class_names,
                                      score_threshold) for out, (_, scale, content) in zip(outs, prepared)]

    def _device(self):
        """Where the model's weights are (the CPU for a model without any, or one that is not torch's)."""
        import torch

        parameters = getattr(self.model, "parameters", None)
        first = next(iter(parameters()), None) if callable(parameters) else None
        return first.device if first is not None else torch.device("cpu")
