"""Prediction grid PNG and PR-curve CSV."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from cvrepro.learning import pictures as vz
from cvrepro.core.fileio import CvreproError

NAMES = {0: "car", 1: "person", 2: "bicycle"}


def _sample(n, size=128):
    rng = np.random.default_rng(0)
    images, gts, preds = [], [], []
    for i in range(n):
        images.append(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        boxes = np.array([[10, 10, 50, 60], [70, 5, 120, 40]], dtype=np.float32)
        labels = np.array([i % 3, (i + 1) % 3])
        gts.append({"boxes": boxes, "labels": labels})
        preds.append({"boxes": boxes + 2, "scores": np.array([0.87, 0.1]), "labels": labels})
    return images, gts, preds


def _expected_size(n, cols, side):
    s = vz.scale_for(side, side)
    pw = ph = side * s
    ncols, nrows = min(cols, n), math.ceil(n / cols)
    return (ncols * (2 * pw + vz.GAP) + (ncols + 1) * vz.PAD, nrows * (vz.TITLE_H + ph) + (nrows + 1) * vz.PAD)


@pytest.mark.parametrize("n,cols", [(1, 4), (5, 4), (8, 4), (3, 2)])
def test_grid_png_size(tmp_path, n, cols):
    out = tmp_path / "plots" / "grid.png"
    vz.prediction_grid(*_sample(n), NAMES, out, score_threshold=0.3, cols=cols)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == _expected_size(n, cols, 128)
    assert vz.scale_for(128, 128) == 2  # 128 px images are doubled
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_grid_draws_panels_and_is_deterministic(tmp_path):
    images, gts, preds = _sample(2)
    images = [np.zeros_like(im) for im in images]  # black images: anything coloured is a drawing
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    vz.prediction_grid(images, gts, preds, NAMES, a)
    vz.prediction_grid(images, gts, preds, NAMES, b)
    assert a.read_bytes() == b.read_bytes()
    arr = np.asarray(Image.open(a))
    s = vz.scale_for(128, 128)
    # the first ground-truth box's left edge is drawn in the class colour of label 0
    y0 = vz.PAD + vz.TITLE_H
    x0 = vz.PAD
    assert tuple(arr[y0 + 30 * s, x0 + 10 * s]) == vz.class_colour(0)
    # the low-score prediction (0.1) is not drawn on the prediction panel
    px = vz.PAD + 128 * s + vz.GAP
    assert tuple(arr[y0 + 20 * s, px + 72 * s]) == (0, 0, 0)


def test_grid_accepts_grayscale_and_empty_targets(tmp_path):
    img = np.zeros((64, 48), dtype=np.uint8)
    gts = [{"boxes": np.zeros((0, 4)), "labels": np.zeros((0,), int)}]
    preds = [{"boxes": [], "scores": [], "labels": []}]
    out = tmp_path / "g.png"
    vz.prediction_grid([img], gts, preds, NAMES, out)
    assert Image.open(out).size[0] > 0


def test_grid_rejects_bad_input(tmp_path):
    images, gts, preds = _sample(2)
    with pytest.raises(CvreproError):
        vz.prediction_grid([], [], [], NAMES, tmp_path / "x.png")
    with pytest.raises(CvreproError):
        vz.prediction_grid(images, gts[:1], preds, NAMES, tmp_path / "x.png")
    with pytest.raises(CvreproError, match="uint8"):
        vz.prediction_grid([im.astype(np.float32) for im in images], gts, preds, NAMES, tmp_path / "x.png")
    with pytest.raises(CvreproError, match="shape"):
        vz.prediction_grid([im.transpose(2, 0, 1) for im in images], gts, preds, NAMES, tmp_path / "x.png")


def test_pr_curves_csv(tmp_path):
    curves = {"car": [1.0] * 101, "person": [round(1 - r / 100, 4) for r in range(101)]}
    out = tmp_path / "pr.csv"
    vz.pr_curves_csv(curves, out)
    lines = out.read_text().splitlines()
    assert len(lines) == 102
    assert lines[0] == "recall,car,person"
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["recall"] == "0.00" and rows[-1]["recall"] == "1.00"
    assert float(rows[50]["recall"]) == 0.5 and float(rows[50]["person"]) == 0.5
    assert float(rows[100]["car"]) == 1.0


def test_pr_curves_csv_rejects_wrong_length(tmp_path):
    with pytest.raises(CvreproError, match="101"):
        vz.pr_curves_csv({"car": [1.0] * 100}, tmp_path / "pr.csv")
