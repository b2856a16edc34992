"""Aspect-preserving sizes (`preprocess.resize: letterbox`): images, boxes and masks scaled by one
factor per axis with padding bottom and right, predictions mapped back to original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cvrepro.core.fileio import CvreproError, read_json
from cvrepro.core.paths import processed_split
from cvrepro.config.typed import typed
from cvrepro.dataset.processed import ProcessedSplit, fit_image, fitted
from cvrepro.learning.predictor import Predictor

from helpers import prepared_data, tiny_params

LETTERBOX = ["preprocess.resize=letterbox"]


def test_fitted_keeps_the_aspect_ratio_and_pads_bottom_right():
    assert fitted(640, 480, 128, "letterbox") == (128, 96)
    assert fitted(480, 640, 1024, "letterbox") == (768, 1024)
    assert fitted(640, 480, 128, "stretch") == (128, 128)
    im = Image.fromarray(np.full((480, 640, 3), 200, dtype=np.uint8))
    out = fit_image(im, im.size, 128, "letterbox")
    assert out.shape == (3, 128, 128) and (out[:, :96] == 200).all() and (out[:, 96:] == 0).all()
    stretched = fit_image(im, im.size, 128)
    assert stretched.tobytes() == np.asarray(im.resize((128, 128), Image.BILINEAR)).transpose(2, 0, 1).tobytes()
    crop = tiny_params()
    crop["preprocess"]["resize"] = "crop"
    with pytest.raises(CvreproError, match="preprocess.resize must be one of stretch, letterbox, got 'crop'"):
        typed(crop)


def test_detection_boxes_and_segmentation_masks_are_letterboxed(tmp_path):
    params = tiny_params(overrides=LETTERBOX)
    root = prepared_data(tmp_path, params, n_images=12, n_classification=0)  # 160 x 120 scenes
    assert read_json(root / "data/processed/preprocess.json")["resize"] == "letterbox"
    coco = read_json(root / "data/labels/annotations.json")
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    data = ProcessedSplit(root / processed_split("train"))
    assert np.allclose(data.scales, [[0.8, 0.8]])  # 160x120 -> 128x96, one factor
    for i, image_id in enumerate(data.image_ids.tolist()):
        boxes, _ = data.target(i)
        want = [[x * 0.8, y * 0.8, (x + w) * 0.8, (y + h) * 0.8] for x, y, w, h in by_image.get(image_id, [])]
        assert np.allclose(boxes, np.asarray(want, dtype=np.float32).reshape(-1, 4), atol=1e-4)
        assert (data.images[i][:, 96:] == 0).all()

    seg = tiny_params(overrides=["task=segmentation", *LETTERBOX])
    seg_root = prepared_data(tmp_path / "seg", seg, n_images=12, n_classification=0)
    data = ProcessedSplit(seg_root / processed_split("train"))
    for i in range(len(data)):
        assert (data.masks[i][96:] == 255).all() and (data.masks[i][:96] != 255).all()


def test_predictions_map_back_to_original_pixels():
    class Boxes(torch.nn.Module):  # a stand-in network: one box around the letterboxed content
        def forward(self, images):
            return [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 30.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1])}]

    spec = {"input": {"size": 64, "fit": "letterbox"}}
    det = Predictor(Boxes(), spec, {"1": "thing"}, "v0", {})
    det.task = __import__("cvrepro").tasks.get("detection")
    image = np.zeros((100, 200, 3), dtype=np.uint8)  # 200 x 100 -> 64 x 32
    pixels, scale = det.preprocess(image)
    assert pixels.shape == (3, 64, 64) and scale == (64 / 200, 32 / 100)
    assert det(image)[0]["box"] == pytest.approx([10 / 0.32, 20 / 0.32, 50 / 0.32, 30 / 0.32])

    class Scores(torch.nn.Module):  # class 1 on the image, class 2 on the padding
        def forward(self, images):
            s = torch.zeros(3, 64, 64)
            s[1, :32] = 1.0
            s[2, 32:] = 1.0
            return [{"scores": s}]

    seg = Predictor(Scores(), spec, {"1": "a", "2": "b"}, "v0", {})
    seg.task = __import__("cvrepro").tasks.get("segmentation")
    mask = seg(image)["mask"]
    assert mask.shape == (100, 200) and (mask == 1).all()  # the padding never reaches the original


@pytest.mark.slow  # trains
@pytest.mark.parametrize("overrides", [[], ["task=segmentation", "preprocess.size=64"]])
def test_train_and_evaluate_letterboxed(tmp_path, monkeypatch, overrides):
    from cvrepro.stages import evaluate
    from cvrepro.stages.train import run as train

    monkeypatch.chdir(tmp_path)
    params = tiny_params(overrides=[*overrides, *LETTERBOX, "train.epochs=1"])
    root = prepared_data(tmp_path, params, n_images=24, n_classification=0)
    train(params, root)
    assert read_json(root / "models/preprocessing.json")["input"]["fit"] == "letterbox"
    metrics = evaluate.run(params, root)
    assert {"val", "test"} <= set(metrics)
