"""Your own data in the first hour, end to end through real git, DVC and make: `cvrepro import` of an ImageFolder
or a YOLO dataset into a fresh clone, a commit, `make repro`, and metrics of the right task, with no edit under
conf/ or dvc.yaml after the import. An EXIF-rotated JPEG is stored byte for byte and its box lands on the object
in the prediction grid's frame."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, commit_all, copy_template, run, tiny_conf

pytestmark = pytest.mark.slow

COLOURS = {"0": (220, 40, 40), "1": (40, 200, 60)}  # ImageFolder classes named "0" and "1"


def imagefolder(src: Path, per_class: int = 12) -> None:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            pixels = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            pixels[8:24, 8:24] = colour
            (src / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(src / name / f"{i:03d}.png")


def yolo(src: Path, n: int = 40) -> None:
    rng = np.random.default_rng(1)
    for i in range(n):
        subset = "train" if i < 30 else "val"
        pixels = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(0, 40)), int(rng.integers(0, 24))
        pixels[y0:y0 + 20, x0:x0 + 20] = (230, 230, 40)
        for folder in ("images", "labels"):
            (src / folder / subset).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(src / "images" / subset / f"f{i:03d}.jpg", quality=95)
        (src / "labels" / subset / f"f{i:03d}.txt").write_text(f"0 {(x0 + 10) / 64} {(y0 + 10) / 48} {20 / 64} {20 / 48}\n")
    (src / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: ['box']\n")


def fresh_clone(tmp_path: Path) -> Path:
    """The template with the project's standing tiny config committed, cloned: what a team member starts from."""
    origin = copy_template(tmp_path / "origin")
    tiny_conf(origin)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, origin / name)
    commit_all(origin, "template")
    run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], tmp_path)
    return tmp_path / "clone"


def make_repro(root: Path) -> str:
    venv = Path(sys.executable).parent.parent  # the venv running the tests; never reinstalled (-o)
    return run(["make", f"VENV={venv}", "-o", f"{venv}/bin/.installed", "repro"], root).stdout


@pytest.mark.parametrize("fmt, make_source, task, metric", [
    ("imagefolder", imagefolder, "classification", "accuracy"),
    ("yolo", yolo, "detection", "AP50"),
])
def test_import_commit_make_repro_runs_the_task_of_the_data(tmp_path: Path, fmt, make_source, task, metric):
    clone = fresh_clone(tmp_path)
    make_source(tmp_path / "mydata")
    run(["cvrepro", "import", fmt, str(tmp_path / "mydata")], clone)
    changed = run(["git", "status", "--porcelain"], clone).stdout
    assert " M conf/config.yaml" in changed and "?? conf/dataset/mydata.yaml" in changed  # the import's own
    commit_all(clone, "import my data")
    out = make_repro(clone)
    assert "Running stage 'evaluate'" in out, out
    metrics = json.loads((clone / "metrics/metrics.json").read_text())
    assert 0 <= metrics["val"][metric] <= 1
    lineage = json.loads((clone / "metrics/lineage.json").read_text())
    assert lineage["params"]["task"] == task and lineage["params"]["dataset"]["name"] == "mydata"
    assert run(["git", "diff", "--name-only", "HEAD", "--", "conf", "dvc.yaml"], clone).stdout == ""
    if fmt == "imagefolder":  # class "0" is category id 1, name "0": the docs' rule, the source's names
        labels = json.loads((clone / "models/label_map.json").read_text())
        assert labels == {"1": "0", "2": "1"}
