"""The picture sheet of `cvrepro check --sheet FILE`: the worst cases, one cell each, so a person can see
in a minute whether a finding is a real problem (a leak, a box labelled twice) or a quirk of the data.

A cell is a title over one or two panels of PANEL x PANEL pixels: the image fitted inside with the
flagged boxes drawn, or, for a box finding, the image and a zoom around the box. PIL only, via the
helpers of learning/pictures.py, so the bytes are stable for the same inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from cvrepro.learning.pictures import BACKGROUND, PAD, TITLE_BG, TITLE_FG, TITLE_H, _font, _save_png

PANEL = 192  # pixels a side
GAP = 4
COLS = 3  # cells a row
BOX = (230, 25, 75)
FONT_PX = 12  # a caption's height
MAX_CAPTIONS = 8  # a crowded panel shows its boxes without their class names
ZOOM_MARGIN = 1.0  # the zoom shows the box and this many box sizes around it


def _open(raw: Path, rel: str) -> Image.Image | None:
    try:
        with Image.open(raw / rel) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None  # a missing or unreadable image: its panel says so


def _zoom(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    m = max(w, h, 4.0) * ZOOM_MARGIN
    return (max(0, math.floor(x - m)), max(0, math.floor(y - m)), min(width, math.ceil(x + w + m)),
            min(height, math.ceil(y + h + m)))


def panel(raw: Path, rel: str, boxes: list[tuple[list | None, str]], zoom: bool) -> Image.Image:
    """The image (or the zoom around its first box) fitted into PANEL x PANEL, boxes outlined and captioned;
    labels without a box (a classification's class) are written along the bottom."""
    out = Image.new("RGB", (PANEL, PANEL), (40, 40, 40))
    im = _open(raw, rel)
    draw, font = ImageDraw.Draw(out), _font()
    if im is None:
        draw.text((6, 6), "unreadable", fill=(255, 255, 255), font=font)
        return out
    framed = [(b, c) for b, c in boxes if b is not None]
    left, top, right, bottom = _zoom(framed[0][0], *im.size) if zoom and framed else (0, 0, *im.size)
    crop = im.crop((left, top, right, bottom))
    s = PANEL / max(crop.size[0], crop.size[1], 1)
    size = (max(1, round(crop.size[0] * s)), max(1, round(crop.size[1] * s)))
    out.paste(crop.resize(size, Image.Resampling.NEAREST if s > 1 else Image.Resampling.BILINEAR), (0, 0))
    for (x, y, w, h), caption in framed:
        x0, y0 = (x - left) * s, (y - top) * s
        draw.rectangle([x0, y0, max(x0 + 1, x0 + w * s - 1), max(y0 + 1, y0 + h * s - 1)], outline=BOX, width=2)
        if not zoom and len(framed) <= MAX_CAPTIONS:
            draw.text((x0 + 2, max(0, y0 - FONT_PX)), caption, fill=BOX, font=font)
    loose = ", ".join(c for b, c in boxes if b is None)
    if loose:
        draw.rectangle([0, PANEL - FONT_PX - 4, PANEL, PANEL], fill=TITLE_BG)
        draw.text((3, PANEL - FONT_PX - 3), loose[:40], fill=TITLE_FG, font=font)
    return out


def draw_sheet(cases: list[dict], raw: Path, out: Path) -> None:
    """cases: {title, panels: [(path, [(bbox xywh or None, caption)])], zoom: the second panel zooms on the
    first box}."""
    font = _font()
    per = max(len(c["panels"]) for c in cases)
    cell_w, cell_h = per * PANEL + (per - 1) * GAP, TITLE_H + PANEL
    cols, rows = min(COLS, len(cases)), math.ceil(len(cases) / COLS)
    sheet = Image.new("RGB", (cols * cell_w + (cols + 1) * PAD, rows * cell_h + (rows + 1) * PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, case in enumerate(cases):
        r, c = divmod(i, COLS)
        x0, y0 = PAD + c * (cell_w + PAD), PAD + r * (cell_h + PAD)
        draw.rectangle([x0, y0, x0 + cell_w - 1, y0 + TITLE_H - 1], fill=TITLE_BG)
        names = " | ".join(dict.fromkeys(Path(p).name for p, _ in case["panels"]))
        draw.text((x0 + 3, y0 + 2), f"{case['title']}: {names}"[:90], fill=TITLE_FG, font=font)
        for j, (rel, boxes) in enumerate(case["panels"]):
            zoom = bool(case.get("zoom")) and j == 1
            sheet.paste(panel(raw, rel, boxes, zoom), (x0 + j * (PANEL + GAP), y0 + TITLE_H))
    _save_png(sheet, Path(out))
