"""Pictures and plot data for the `evaluate` stage: a prediction grid PNG and PR-curve CSV.

PIL only (no matplotlib): one dependency fewer, and the output is byte-stable for the
same inputs, so DVC does not see a changed plot when nothing changed.
"""

from __future__ import annotations

import colorsys
import hashlib
import csv
import io as _stdio
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cvrepro.config.params import IGNORE_INDEX
from cvrepro.core.fileio import CvreproError, atomic_write_bytes

# Layout, in output pixels. A grid of n images with `cols` columns has
# min(cols, n) columns and ceil(n / cols) rows of cells; each cell is two panels
# (ground truth | prediction) of the largest scaled image size, with a title row above.
PAD = 12  # around and between cells
GAP = 4  # between the two panels of one cell
TITLE_H = 16  # title row above each panel
MIN_SIDE = 256  # images whose longer side is smaller are scaled up by an integer factor
MAX_SCALE = 8
FONT_SIZE = 11
BOX_WIDTH = 2

BACKGROUND = (255, 255, 255)
TITLE_BG = (236, 236, 236)
TITLE_FG = (20, 20, 20)

# Distinct, saturated colours that read on photos; more classes continue on the colour wheel.
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128),
    (170, 110, 40), (128, 0, 0), (0, 0, 128), (128, 128, 0),
]


def class_colour(index: int) -> tuple[int, int, int]:
    """Colour of the `index`-th class (by sorted class id): fixed palette, then the golden-ratio wheel."""
    if index < len(_PALETTE):
        return _PALETTE[index]
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def scale_for(height: int, width: int) -> int:
    """Integer nearest-neighbour upscale so the longer side reaches MIN_SIDE (1 if already large)."""
    longest = max(height, width)
    return max(1, min(MAX_SCALE, math.ceil(MIN_SIDE / longest))) if longest else 1


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _as_rgb(img: Any, i: int) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise CvreproError(f"image {i}: expected an (H, W, 3) array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise CvreproError(f"image {i}: expected dtype uint8, got {a.dtype}")
    return np.ascontiguousarray(a)


def _boxes(target: dict, i: int, what: str, with_scores: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(target["labels"]).reshape(-1).astype(np.int64)
        scores = np.asarray(target["scores"], dtype=np.float64).reshape(-1) if with_scores else None
    except (KeyError, ValueError, TypeError) as e:
        keys = "boxes, scores, labels" if with_scores else "boxes, labels"
        raise CvreproError(f"{what} {i}: expected {keys} arrays ({e})") from None
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise CvreproError(f"{what} {i}: boxes, labels and scores differ in length")
    return boxes, labels, scores


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1, y1  # from the origin, so ascent is included


def _ink_for(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _draw_boxes(panel: Image.Image, boxes, labels, captions, colours, scale: int, font) -> None:
    draw = ImageDraw.Draw(panel)
    pw, ph = panel.size
    for (x0, y0, x1, y1), label, caption in zip(boxes, labels, captions):
        colour = colours(int(label))
        rx0, ry0 = round(x0 * scale), round(y0 * scale)
        rx1, ry1 = max(rx0 + 1, round(x1 * scale) - 1), max(ry0 + 1, round(y1 * scale) - 1)
        draw.rectangle([rx0, ry0, rx1, ry1], outline=colour, width=BOX_WIDTH)
        tw, th = _text_size(draw, caption, font)
        tw, th = tw + 4, th + 2
        tx = min(max(rx0, 0), max(pw - tw, 0))
        ty = ry0 - th if ry0 - th >= 0 else max(ry0, 0)  # above the box, or inside its top edge
        draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=colour)
        draw.text((tx + 2, ty), caption, fill=_ink_for(colour), font=font)


def prediction_grid(
    images: list[np.ndarray],
    gts: list[dict],
    preds: list[dict],
    class_names: dict[int, str],
    out_path: Path,
    score_threshold: float = 0.3,
    cols: int = 4,
    titles: tuple[str, str] | None = None,
) -> None:
    """Write a PNG grid: per image, ground truth (left) beside predictions (right).

    `images`: (H, W, 3) uint8 arrays; `gts`: {"boxes": (N, 4) xyxy in image pixels,
    "labels": (N,)}; `preds`: the same plus "scores". Predictions below `score_threshold`
    are not drawn; the rest are captioned "name 0.87". One colour per class (by sorted class id).
    Small images are scaled up by an integer factor (nearest) so the longer side reaches
    MIN_SIDE. Image size: see the layout constants at the top of this module. `titles`: the two panels'
    titles instead of "ground truth (n)" and "prediction (n, score >= t)" (label-issues: "suggestion").
    """
    n = len(images)
    if n == 0:
        raise CvreproError("prediction_grid: no images to draw")
    if len(gts) != n or len(preds) != n:
        raise CvreproError(f"prediction_grid: {n} images but {len(gts)} ground truths and {len(preds)} predictions")
    if cols < 1:
        raise CvreproError(f"prediction_grid: cols must be at least 1, got {cols}")

    names = {int(k): str(v) for k, v in class_names.items()}
    order = {cid: i for i, cid in enumerate(sorted(names))}

    def colours(label: int) -> tuple[int, int, int]:
        return class_colour(order.get(label, len(order) + abs(label)))

    arrays = [_as_rgb(img, i) for i, img in enumerate(images)]
    scales = [scale_for(a.shape[0], a.shape[1]) for a in arrays]
    pw = max(a.shape[1] * s for a, s in zip(arrays, scales))
    ph = max(a.shape[0] * s for a, s in zip(arrays, scales))
    cell_w, cell_h = 2 * pw + GAP, TITLE_H + ph
    ncols, nrows = min(cols, n), math.ceil(n / cols)
    grid = Image.new("RGB", (ncols * cell_w + (ncols + 1) * PAD, nrows * cell_h + (nrows + 1) * PAD), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _font()

    for i, (a, s) in enumerate(zip(arrays, scales)):
        gb, gl, _ = _boxes(gts[i], i, "ground truth", with_scores=False)
        pb, pl, ps = _boxes(preds[i], i, "prediction", with_scores=True)
        keep = ps >= score_threshold
        pb, pl, ps = pb[keep], pl[keep], ps[keep]
        base = Image.fromarray(a, "RGB")
        if s != 1:
            base = base.resize((a.shape[1] * s, a.shape[0] * s), Image.Resampling.NEAREST)

        gt_panel, pred_panel = base.copy(), base.copy()
        _draw_boxes(gt_panel, gb, gl, [names.get(int(c), str(int(c))) for c in gl], colours, s, font)
        _draw_boxes(
            pred_panel, pb, pl,
            [f"{names.get(int(c), str(int(c)))} {float(v):.2f}" for c, v in zip(pl, ps)],
            colours, s, font,
        )

        r, c = divmod(i, cols)
        x = PAD + c * (cell_w + PAD)
        y = PAD + r * (cell_h + PAD)
        named = (f"ground truth ({len(gb)})", f"prediction ({len(pb)}, score >= {score_threshold:.2f})")
        if titles is not None:
            named = (f"{titles[0]} ({len(gb)})", f"{titles[1]} ({len(pb)})")
        for j, (panel, title) in enumerate(zip((gt_panel, pred_panel), named)):
            px = x + j * (pw + GAP)
            draw.rectangle([px, y, px + pw - 1, y + TITLE_H - 1], fill=TITLE_BG)
            draw.text((px + 3, y + 2), title, fill=TITLE_FG, font=font)
            grid.paste(panel, (px, y + TITLE_H))

    buf = _stdio.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(out_path, buf.getvalue())


def pr_curves_csv(pr_curve: dict[str, list[float]], out_path: Path) -> None:
    """Write ``class,recall,precision`` rows (101 per class, recall 0.00..1.00) for `dvc plots`.

    One long table whatever the classes are called: dvc.yaml's PR plot colours the lines by the
    `class` column (template .dvc/plots/pr_by_class.json), so no class name is written there.
    Classes follow the dict's order; a point without a value (None) is left out.
    """
    n = 101
    for name, values in pr_curve.items():
        if len(values) != n:
            raise CvreproError(f"pr curve of {name!r}: expected {n} precision values, got {len(values)}")
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "recall", "precision"])
    for name, values in pr_curve.items():
        for r, v in enumerate(values):
            if v is not None:
                w.writerow([name, f"{r / 100:.2f}", f"{float(v):.4f}"])
    atomic_write_bytes(out_path, buf.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------- segmentation and classification

MASK_ALPHA = 0.55  # class colour over the image; background stays the image itself
IGNORE_COLOUR = (40, 40, 40)


def _save_png(img: Image.Image, out_path: Path) -> None:
    buf = _stdio.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(out_path, buf.getvalue())


def _class_colours(class_names: dict[int, str]) -> dict[int, tuple[int, int, int]]:
    return {cid: class_colour(i) for i, cid in enumerate(sorted(int(k) for k in class_names))}


def _overlay(a: np.ndarray, mask: np.ndarray, colours: dict[int, tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.float32)
    alpha = np.zeros(256, dtype=np.float32)
    for cid, colour in colours.items():
        lut[cid], alpha[cid] = colour, MASK_ALPHA
    lut[ignore_index], alpha[ignore_index] = IGNORE_COLOUR, 1.0
    m = np.asarray(mask, dtype=np.uint8)
    w = alpha[m][..., None]
    return np.rint(a * (1 - w) + lut[m] * w).astype(np.uint8)


def _panel_grid(cells: list[list[tuple[str, np.ndarray]]], out_path: Path, cols: int,
                legend: list[tuple[str, tuple[int, int, int]]] = ()) -> None:
    """cells: per image, a list of (title, HxWx3 uint8) panels side by side; a legend row on top."""
    font = _font()
    s = scale_for(*cells[0][0][1].shape[:2])
    ph, pw = (max(p.shape[i] for c in cells for _, p in c) * s for i in (0, 1))
    per = len(cells[0])
    cell_w, cell_h = per * pw + (per - 1) * GAP, TITLE_H + ph
    n = len(cells)
    ncols, nrows = min(cols, n), math.ceil(n / cols)
    top = TITLE_H + PAD if legend else 0
    grid = Image.new("RGB", (ncols * cell_w + (ncols + 1) * PAD, top + nrows * cell_h + (nrows + 1) * PAD), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    x = PAD
    for name, colour in legend:
        tw, _ = _text_size(draw, name, font)
        draw.rectangle([x, PAD, x + tw + 5, PAD + TITLE_H - 1], fill=colour)
        draw.text((x + 3, PAD + 2), name, fill=_ink_for(colour), font=font)
        x += tw + 5 + GAP * 2
    for i, panels in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = PAD + c * (cell_w + PAD), top + PAD + r * (cell_h + PAD)
        for j, (title, a) in enumerate(panels):
            px = x0 + j * (pw + GAP)
            draw.rectangle([px, y0, px + pw - 1, y0 + TITLE_H - 1], fill=TITLE_BG)
            draw.text((px + 3, y0 + 2), title, fill=TITLE_FG, font=font)
            panel = Image.fromarray(a, "RGB")
            grid.paste(panel.resize((a.shape[1] * s, a.shape[0] * s), Image.Resampling.NEAREST), (px, y0 + TITLE_H))
    _save_png(grid, out_path)


def mask_grid(images: list[np.ndarray], gt_masks: list[np.ndarray], pred_masks: list[np.ndarray],
              class_names: dict[int, str], out_path: Path, ignore_index: int = IGNORE_INDEX, cols: int = 2) -> None:
    """Write a PNG grid: per image, the image | ground-truth mask | predicted mask (class colours over
    the image, background left clear, ignored pixels dark), with a colour legend on top."""
    n = len(images)
    if n == 0:
        raise CvreproError("mask_grid: no images to draw")
    if len(gt_masks) != n or len(pred_masks) != n:
        raise CvreproError(f"mask_grid: {n} images but {len(gt_masks)} ground truths and {len(pred_masks)} predictions")
    colours = _class_colours({k: v for k, v in class_names.items() if int(k) != 0})
    cells = []
    for i, (img, gt, pred) in enumerate(zip(images, gt_masks, pred_masks)):
        a = _as_rgb(img, i)
        if gt.shape != a.shape[:2] or pred.shape != a.shape[:2]:
            raise CvreproError(f"mask_grid: image {i} is {a.shape[:2]} but its masks are {gt.shape} and {pred.shape}")
        cells.append([("image", a), ("ground truth", _overlay(a, gt, colours, ignore_index)),
                      ("prediction", _overlay(a, pred, colours, ignore_index))])
    legend = [(class_names[k], c) for k, c in colours.items()] + [("ignore", IGNORE_COLOUR)]
    _panel_grid(cells, out_path, cols, legend)


def label_grid(images: list[np.ndarray], actual: list[int], predicted: list[int], scores: list[float],
               class_names: dict[int, str], out_path: Path, cols: int = 6) -> None:
    """Write a PNG grid of classified images titled 'actual -> predicted score', wrong ones framed red."""
    n = len(images)
    if n == 0:
        raise CvreproError("label_grid: no images to draw")
    if not len(actual) == len(predicted) == len(scores) == n:
        raise CvreproError(f"label_grid: {n} images but {len(actual)} labels and {len(predicted)} predictions")
    cells = []
    for i, (img, a, p, s) in enumerate(zip(images, actual, predicted, scores)):
        rgb = _as_rgb(img, i).copy()
        if a != p:  # a red frame marks a mistake
            rgb[:2], rgb[-2:], rgb[:, :2], rgb[:, -2:] = (230, 25, 75), (230, 25, 75), (230, 25, 75), (230, 25, 75)
        name = lambda c: class_names.get(int(c), str(int(c)))  # noqa: E731
        cells.append([(f"{name(a)} -> {name(p)} {float(s):.2f}", rgb)])
    _panel_grid(cells, out_path, cols)


def confusion_csv(rows: list[tuple[int, str, str]], out_path: Path) -> None:
    """Write ``image_id,actual,predicted`` (one row per image, class names) for DVC's confusion template."""
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "actual", "predicted"])
    w.writerows(rows)
    atomic_write_bytes(out_path, buf.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------- what the grids show

SAMPLE_SHARE = 4  # one grid slot in this many goes to a deterministic sample; the rest lead with the worst


def _sample_key(image_id: int) -> str:
    return hashlib.sha256(f"grid:{int(image_id)}".encode()).hexdigest()


def grid_order(badness: list[float], image_ids: list[int], n: int) -> list[int]:
    """Indices of the `n` images a grid shows, in order: the worst first (highest `badness`: a task gives
    mistakes a badness above 1 and correct images 1 - their confidence, so mistakes lead, then the
    lowest-scoring), then a deterministic sample of the rest (by a hash of the image id), one slot in
    SAMPLE_SHARE, so the grid also shows what typical images look like. Ties go by the same hash: the
    order depends only on the predictions, never on file order (a dataset sorted into class folders)."""
    if len(badness) != len(image_ids):
        raise CvreproError(f"grid_order: {len(badness)} scores but {len(image_ids)} image ids")
    n = min(n, len(badness))
    by_worst = sorted(range(len(badness)), key=lambda i: (-float(badness[i]), _sample_key(image_ids[i])))
    worst = by_worst[:n - n // SAMPLE_SHARE]
    rest = sorted(set(range(len(badness))) - set(worst), key=lambda i: _sample_key(image_ids[i]))
    return worst + rest[:n - len(worst)]


def detection_badness(gt: dict, pred: dict, score_threshold: float, iou: float = 0.5) -> float:
    """1 + the share of boxes wrong (missed ground truth or false positives at IoU >= `iou`, predictions
    at or above the grid's score threshold) for an image with a mistake; else 1 - its lowest matched score."""
    gb, gl, _ = _boxes(gt, 0, "ground truth", with_scores=False)
    pb, pl, ps = _boxes(pred, 0, "prediction", with_scores=True)
    keep = ps >= score_threshold
    pb, pl, ps = pb[keep], pl[keep], ps[keep]
    used, matched = set(), []
    for j in np.argsort(-ps, kind="stable"):
        best, best_i = iou, None
        for i in range(len(gb)):
            if i in used or gl[i] != pl[j]:
                continue
            x0, y0 = max(gb[i][0], pb[j][0]), max(gb[i][1], pb[j][1])
            x1, y1 = min(gb[i][2], pb[j][2]), min(gb[i][3], pb[j][3])
            inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
            union = (gb[i][2] - gb[i][0]) * (gb[i][3] - gb[i][1]) + (pb[j][2] - pb[j][0]) * (pb[j][3] - pb[j][1]) - inter
            if union > 0 and inter / union >= best:
                best, best_i = inter / union, i
        if best_i is not None:
            used.add(best_i)
            matched.append(float(ps[j]))
    wrong = (len(gb) - len(used)) + (len(pb) - len(matched))
    if wrong:
        return 1.0 + wrong / max(1, len(gb) + len(pb))
    return 1.0 - (min(matched) if matched else 1.0)


def classification_badness(actual: int, predicted: int, score: float) -> float:
    """Confident mistakes first, then the other mistakes, then correct images by rising confidence."""
    return 1.0 + float(score) if actual != predicted else 1.0 - float(score)


def confusion_png(matrix: np.ndarray, class_names: dict[int, str], out_path: Path, title: str) -> None:
    """A confusion-matrix picture with the count in every cell (rows: actual, columns: predicted), shaded by
    the share of the row, off-diagonal cells in red: 5 errors among 374 images stay visible as numbers."""
    m = np.asarray(matrix, dtype=np.int64)
    k = m.shape[0]
    names = [class_names.get(i, str(i)) for i in range(k)]
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, n, font)[0] for n in names) + 8
    cell = max(40, max(_text_size(probe, str(int(v)), font)[0] for v in m.flat) + 10)
    width, height = label_w + k * cell + 2 * PAD, TITLE_H * 2 + label_w // 2 + k * cell + 2 * PAD
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((PAD, PAD), f"{title}: {int(np.trace(m))} of {int(m.sum())} correct", fill=TITLE_FG, font=font)
    top = PAD + TITLE_H * 2
    for j, name in enumerate(names):  # column heads
        draw.text((PAD + label_w + j * cell + 3, top - TITLE_H), name[: max(1, cell // 7)], fill=TITLE_FG, font=font)
    rows = m.sum(axis=1)
    for i, name in enumerate(names):
        y = top + i * cell
        draw.text((PAD, y + cell // 2 - FONT_SIZE // 2), name, fill=TITLE_FG, font=font)
        for j in range(k):
            share = m[i, j] / rows[i] if rows[i] else 0.0
            base = (60, 180, 75) if i == j else (230, 25, 75)
            fill = tuple(int(255 - (255 - c) * (0.15 + 0.85 * share)) if m[i, j] else 250 for c in base)
            x = PAD + label_w + j * cell
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=fill)
            text = str(int(m[i, j]))
            tw, th = _text_size(draw, text, font)
            draw.text((x + (cell - tw) // 2, y + (cell - th) // 2), text, fill=_ink_for(fill), font=font)
    _save_png(img, out_path)
