"""Preprocess on every core with reduced-scale JPEG decoding: same bytes whatever the worker count,
PNGs exactly as before, JPEGs close to a full decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvrepro.dataset import processed
from cvrepro.dataset.processed import resize_all, resized


def _images(tmp_path, n: int, fmt: str, size=(640, 480)) -> list[str]:
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        # smooth content (a JPEG of noise is not what cameras give): a gradient plus a few blocks
        y, x = np.mgrid[0:size[1], 0:size[0]]
        pixels = np.stack([(x * 255 // size[0]), (y * 255 // size[1]), ((x + y) * 127 // sum(size))], -1)
        for _ in range(4):
            x0, y0 = rng.integers(0, size[0] - 100), rng.integers(0, size[1] - 100)
            pixels[y0:y0 + 80, x0:x0 + 80] = rng.integers(0, 256, 3)
        path = tmp_path / f"img_{i}.{fmt.lower()}"
        Image.fromarray(pixels.astype(np.uint8)).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(str(path))
    return paths


def _full_decode(path: str, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)


def test_pool_gives_the_same_bytes_as_serial(tmp_path, monkeypatch):
    paths = _images(tmp_path, 6, "JPEG")
    serial = np.stack(list(resize_all(paths, 128, "t", workers=1)))
    monkeypatch.setattr(processed, "POOL_MIN_IMAGES", 1)
    pooled = np.stack(list(resize_all(paths, 128, "t", workers=2)))
    assert pooled.tobytes() == serial.tobytes() and serial.shape == (6, 3, 128, 128)


def test_png_is_decoded_in_full_and_jpeg_at_reduced_scale(tmp_path):
    (tmp_path / "png").mkdir()
    png = _images(tmp_path / "png", 1, "PNG")[0]
    assert resized(png, 128).tobytes() == _full_decode(png, 128).tobytes()  # the demo's bytes do not move
    jpeg = _images(tmp_path, 1, "JPEG")[0]
    reduced, full = resized(jpeg, 128).astype(int), _full_decode(jpeg, 128).astype(int)
    assert not np.array_equal(reduced, full)  # 640x480 -> decoded at 1/2 (320x240), not in full
    assert np.abs(reduced - full).mean() < 2.0  # but the same picture
    assert resized(jpeg, 480).tobytes() == _full_decode(jpeg, 480).tobytes()  # no smaller scale fits 480


# ----------------------------------------------------------------- encoded stores (dataset/encoded.py)


def test_encoded_stores_read_like_the_array_and_rerun_byte_identical(tmp_path):
    from helpers import prepared_data, tiny_params

    from cvrepro.core.paths import processed_split
    from cvrepro.dataset.processed import ProcessedSplit

    arrays = prepared_data(tmp_path / "npy", tiny_params(), n_images=16, n_classification=0)
    want = ProcessedSplit(arrays / processed_split("train"))
    for store, exact in (("png", True), ("webp", False), ("jpeg", False)):
        params = tiny_params(overrides=[f"preprocess.store={store}", "preprocess.quality=90"])
        root = prepared_data(tmp_path / store, params, n_images=16, n_classification=0)
        got = ProcessedSplit(root / processed_split("train"))
        assert got.images.shape == want.images.shape and len(got.images) == len(want)
        decoded = np.stack(got.images[0:len(got)])
        if exact:
            assert decoded.tobytes() == np.asarray(want.images).tobytes()  # lossless: training sees the same bits
        else:
            assert np.abs(decoded.astype(int) - want.images.astype(int)).mean() < 4
        size = (root / processed_split("train") / "images.bin").stat().st_size
        assert size < 0.5 * want.images.nbytes
        blob = (root / processed_split("train") / "images.bin").read_bytes()
        from cvrepro.stages import preprocess

        preprocess.run(params, root)  # a rerun encodes the same bytes
        assert (root / processed_split("train") / "images.bin").read_bytes() == blob


@pytest.mark.slow  # trains twice
def test_png_store_streamed_by_loader_workers_trains_the_same_bits(tmp_path, monkeypatch):
    from helpers import prepared_data, tiny_params

    from cvrepro.core.fileio import sha256_file
    from cvrepro.core.paths import WEIGHTS
    from cvrepro.stages.train import run as train

    monkeypatch.chdir(tmp_path)
    weights = []
    for store, workers in (("npy", 0), ("png", 2)):
        params = tiny_params(overrides=[f"preprocess.store={store}", f"train.num_workers={workers}", "train.epochs=1"])
        root = prepared_data(tmp_path / store, params, n_images=20, n_classification=0)
        train(params, root)
        weights.append(sha256_file(root / WEIGHTS))
    assert weights[0] == weights[1]  # lossless store, decoded in 2 loader workers: the same training
