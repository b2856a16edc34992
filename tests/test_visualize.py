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
    curves["car"][7] = None  # no point there: left out, not written as an empty cell
    out = tmp_path / "pr.csv"
    vz.pr_curves_csv(curves, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "class,recall,precision"  # long rows: no class name is a column, so dvc.yaml names none
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 201 and [r["class"] for r in rows] == ["car"] * 100 + ["person"] * 101
    person = {r["recall"]: float(r["precision"]) for r in rows if r["class"] == "person"}
    assert person["0.00"] == 1.0 and person["0.50"] == 0.5 and person["1.00"] == 0.0
    assert "0.07" not in {r["recall"] for r in rows if r["class"] == "car"}


def test_pr_curves_csv_rejects_wrong_length(tmp_path):
    with pytest.raises(CvreproError, match="101"):
        vz.pr_curves_csv({"car": [1.0] * 100}, tmp_path / "pr.csv")


def test_grid_leads_with_mistakes_then_low_scores_then_a_deterministic_sample():
    from cvrepro.learning.pictures import classification_badness, grid_order

    # a dataset sorted into class folders: 40 correct, confident images first, the 3 mistakes last
    actual = [0] * 20 + [1] * 23
    predicted = [0] * 20 + [1] * 20 + [0, 0, 0]
    scores = [0.99] * 20 + [0.98] * 19 + [0.55] + [0.9, 0.6, 0.7]
    ids = list(range(100, 143))
    order = grid_order([classification_badness(a, p, s) for a, p, s in zip(actual, predicted, scores)], ids, 8)
    assert order[:4] == [40, 42, 41, 39]  # confident mistakes first, then the least confident correct image
    assert len(order) == 8 and len(set(order)) == 8
    assert order == grid_order([classification_badness(a, p, s) for a, p, s in zip(actual, predicted, scores)],
                               ids, 8)  # deterministic
    assert order[-2:] != [4, 5]  # the sample is not file order


def test_detection_badness_ranks_missed_and_extra_boxes_above_correct_ones():
    from cvrepro.learning.pictures import detection_badness

    gt = {"boxes": [[0, 0, 10, 10]], "labels": [1]}
    right = {"boxes": [[0, 0, 10, 10]], "labels": [1], "scores": [0.8]}
    wrong_class = {"boxes": [[0, 0, 10, 10]], "labels": [2], "scores": [0.8]}
    missed = {"boxes": np.zeros((0, 4)), "labels": [], "scores": []}
    assert detection_badness(gt, right, 0.3) == pytest.approx(0.2)
    assert detection_badness(gt, missed, 0.3) == pytest.approx(2.0)
    assert detection_badness(gt, wrong_class, 0.3) == pytest.approx(2.0)  # one missed, one extra
    two = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]}
    assert detection_badness(two, right, 0.3) == pytest.approx(1 + 1 / 3)  # one of three boxes wrong
    low = {"boxes": [[0, 0, 10, 10]], "labels": [1], "scores": [0.2]}
    assert detection_badness(gt, low, 0.3) == pytest.approx(2.0)  # below the grid's threshold: missed


def test_confusion_picture_shows_counts(tmp_path):
    from PIL import Image

    from cvrepro.learning.pictures import confusion_png

    m = np.array([[0, 0, 0], [0, 369, 2], [0, 3, 0]])
    confusion_png(m, {0: "-", 1: "cat", 2: "dog"}, tmp_path / "c.png", "val confusion")
    with Image.open(tmp_path / "c.png") as im:
        a = np.asarray(im.convert("RGB"))
    red_cells = np.all(a == a[0, 0], axis=2)  # not all background: cells and numbers drawn
    assert not red_cells.all() and im.size[0] > 100
    again = tmp_path / "d.png"
    confusion_png(m, {0: "-", 1: "cat", 2: "dog"}, again, "val confusion")
    assert again.read_bytes() == (tmp_path / "c.png").read_bytes()  # byte-stable, as DVC needs
