"""The demo dataset generator: deterministic, growth-stable, valid COCO, safe to rerun."""

import hashlib
import json
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvrepro.core import paths
from cvrepro.dataset.demo import _object_patch, generate_demo
from cvrepro.core.fileio import CvreproError

N = 24


def _hashes(root: Path) -> dict[str, str]:
    files = sorted((root / "data").rglob("*"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


def _coco(root: Path) -> dict:
    return json.loads((root / paths.ANNOTATIONS).read_text())


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    stats = generate_demo(root, seed=0, n_images=N)
    return root, stats


def test_same_seed_gives_byte_identical_files(demo_root, tmp_path):
    root, _ = demo_root
    generate_demo(tmp_path, seed=0, n_images=N)
    assert _hashes(tmp_path) == _hashes(root)
    # N scenes + N masks + N classification images + 2 index files, no stray temporary files
    assert len(_hashes(root)) == 3 * N + 2


def test_different_seed_gives_different_bytes(demo_root, tmp_path):
    root, _ = demo_root
    generate_demo(tmp_path, seed=1, n_images=N)
    ours, theirs = _hashes(tmp_path), _hashes(root)
    assert ours.keys() == theirs.keys()
    assert all(ours[k] != theirs[k] for k in ours)


def test_growing_n_appends_and_keeps_first_images(demo_root, tmp_path):
    root, _ = demo_root
    generate_demo(tmp_path, seed=0, n_images=N + 6)
    small, big = _hashes(root), _hashes(tmp_path)
    images = [k for k in small if k.endswith(".png")]
    assert all(big[k] == small[k] for k in images)
    assert len([k for k in big if k.startswith("data/raw/img_")]) == N + 6
    # the labels of the first N images are unchanged too
    a, b = _coco(root), _coco(tmp_path)
    assert b["images"][:N] == a["images"]
    assert b["annotations"][: len(a["annotations"])] == a["annotations"]


def test_coco_structure_and_boxes(demo_root):
    root, stats = demo_root
    coco = _coco(root)
    assert [c["name"] for c in coco["categories"]] == ["person", "cart", "shelf"]
    assert coco["info"]["generator"] == "cvrepro demo" and coco["info"]["seed"] == 0
    assert [im["id"] for im in coco["images"]] == list(range(1, N + 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    by_image = {im["id"]: [] for im in coco["images"]}
    for im in coco["images"]:
        with Image.open(root / paths.RAW_DIR / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]) and img.mode == "RGB"
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
        assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0
        assert 14 <= max(w, h) <= 60
        by_image[a["image_id"]].append(a["bbox"])
    assert all(1 <= len(boxes) <= 4 for boxes in by_image.values())
    for boxes in by_image.values():
        for p, q in combinations(boxes, 2):
            assert _iou(p, q) < 0.3
    # stats agree with the file
    assert stats["images"] == N and stats["objects"] == len(coco["annotations"])
    assert sum(stats["per_class"].values()) == stats["objects"]
    assert all(n > 0 for n in stats["per_class"].values())
    assert stats["time_of_day"]["day"] > 0 and stats["time_of_day"]["night"] > 0
    assert stats["time_of_day"]["night"] == sum(im["time_of_day"] == "night" for im in coco["images"])


def _iou(a, b):
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_night_images_are_darker(demo_root):
    root, _ = demo_root
    mean = {"day": [], "night": []}
    for im in _coco(root)["images"]:
        with Image.open(root / paths.RAW_DIR / im["file_name"]) as img:
            mean[im["time_of_day"]].append(np.asarray(img, dtype=np.float32).mean())
    assert np.mean(mean["night"]) < 0.7 * np.mean(mean["day"])


@pytest.mark.parametrize("cat", [1, 2, 3])
def test_object_patches_are_tight(cat):
    # the annotation box is the patch: something is drawn on every border row and column
    rng = np.random.default_rng(5)
    for _ in range(30):
        alpha = np.asarray(_object_patch(cat, rng, 60).getchannel("A")) > 0
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()


def test_refuses_to_overwrite_without_force(tmp_path):
    generate_demo(tmp_path, seed=0, n_images=3)
    # 3 scenes + 3 classification images
    with pytest.raises(CvreproError, match=r"data/raw already holds 6 files.*--force"):
        generate_demo(tmp_path, seed=0, n_images=3)
    shutil.rmtree(tmp_path / paths.RAW_DIR)
    with pytest.raises(CvreproError, match="annotations.json already exists"):
        generate_demo(tmp_path, seed=0, n_images=3)
    # force clears both, so no image of the earlier, larger run survives
    generate_demo(tmp_path, seed=1, n_images=5, force=True)
    generate_demo(tmp_path, seed=1, n_images=2, force=True)
    names = sorted(p.name for p in (tmp_path / paths.RAW_DIR).iterdir() if p.is_file())
    assert names == ["img_000000.png", "img_000001.png"]
    assert len(list((tmp_path / paths.RAW_DIR / "classification").iterdir())) == 2
    assert len(_coco(tmp_path)["images"]) == 2


@pytest.mark.parametrize("kwargs", [{"n_images": 0}, {"seed": -1}, {"width": 10}, {"night_fraction": 1.5}])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(CvreproError):
        generate_demo(tmp_path, **kwargs)
