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

        from cvrepro.learning.engine import to_tensor

        pixels, scale = self.preprocess(image)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = {k: v.cpu() for k, v in self.model([to_tensor(pixels).to(device)])[0].items()}
        return self.task.postprocess(out, pixels.shape[1:], scale, self.class_names, score_threshold)

    predict = __call__
