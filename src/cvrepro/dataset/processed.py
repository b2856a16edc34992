"""The processed data (`data/processed/`): every image resized once into per-split arrays that
training reads directly, plus `preprocess.json` (size, mean/std, class map, layout).

Images are stored as uint8 (4x smaller than float32, lossless); the normalisation
(mean/std from params) is recorded beside the data and applied when batching, by
the same function in training and prediction. Each split is a folder of plain
.npy files: byte-identical on rerun (unlike .npz, whose zip entries carry the
time) and memory-mappable, so datasets larger than memory stream through.

Beside images.npy / image_ids.npy / scales.npy each task stores its labels
(`Task.write_split`, `Task.layout`).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import CvreproError, write_json
from cvrepro.core.paths import PROCESSED_DIR, PROCESSED_INFO, RAW_DIR
from cvrepro.dataset.encoded import EncodedImages, ShardWriter, encode
from cvrepro.dataset.images import load_image_rgb
from cvrepro.dataset.splits import SPLIT_NAMES


POOL_MIN_IMAGES = 200  # below this a process pool costs more to start than it saves


def preprocess_workers() -> int:
    """Every core this process may use (its CPU affinity: a container's or taskset's limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)




def fitted(width: int, height: int, size: int, mode: str = "stretch") -> tuple[int, int]:
    """The (width, height) a width x height frame takes inside the size x size input."""
    if mode == "stretch":
        return size, size
    s = size / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def fit_image(im: Image.Image, frame: tuple[int, int], size: int, mode: str = "stretch") -> np.ndarray:
    """`im` (the frame, or a reduced-scale decode of it) as uint8 [3, size, size]: bilinear to its fitted
    size, then (letterbox) zero-padded bottom and right, so coordinates scale without an offset."""
    w, h = fitted(*frame, size, mode)
    pixels = np.asarray(im.resize((w, h), Image.BILINEAR)).transpose(2, 0, 1)
    if (w, h) == (size, size):
        return pixels
    out = np.zeros((3, size, size), dtype=np.uint8)
    out[:, :h, :w] = pixels
    return out


def resized(path: str, size: int, mode: str = "stretch", frame: tuple[int, int] | None = None) -> np.ndarray:
    """One image as uint8 [3, size, size] (`fit_image`), a JPEG decoded at the reduced scale closest above
    its fitted size. frame: its stored (width, height), known from the manifest (read here if None).
    A pure function of the file's bytes: any worker, same pixels."""
    try:
        if frame is None:
            with Image.open(path) as im:
                frame = im.size
        im = load_image_rgb(Path(path), draft=fitted(*frame, size, mode))
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged pixel data
        raise CvreproError(f"{path}: the image cannot be read or decoded ({type(e).__name__}: {e}); snapshot "
                           "checks headers and completeness, not every pixel: replace the file and rerun") from None
    return fit_image(im, frame, size, mode)


def _resized_job(job: tuple):
    """A worker's job: resize, and (an encoded store) encode there too, so encoding runs on every core."""
    *args, store, quality = job
    pixels = resized(*args)
    return pixels if store == "npy" else encode(pixels, store, quality)


def resize_all(paths: list[str], size: int, desc: str, workers: int | None = None, mode: str = "stretch",
               frames: list[tuple[int, int]] | None = None, store: tuple[str, int] = ("npy", 90)) -> Iterator:
    """`resized` of every path (encoded as `store` says: arrays for npy, else bytes), in order, with a
    progress bar; in a process pool on large splits."""
    workers = workers or preprocess_workers()
    jobs = [(p, size, mode, frames[i] if frames else None, *store) for i, p in enumerate(paths)]
    # no tqdm monitor thread: forking a process that runs threads can deadlock the children
    tqdm.monitor_interval = 0
    if workers <= 1 or len(paths) < POOL_MIN_IMAGES:
        with tqdm(total=len(paths), desc=desc, unit="img", disable=None, file=sys.stderr) as bar:
            for job in jobs:
                yield _resized_job(job)
                bar.update()
        return
    # fork, as the snapshot's pool does: no re-import of the caller's __main__
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers) as pool, tqdm(total=len(paths), desc=desc, unit="img", disable=None,
                                             file=sys.stderr) as bar:
        for pixels in pool.imap(_resized_job, jobs, chunksize=16):
            yield pixels
            bar.update()


class SplitWriter:
    """Writes one split's images.npy (memory-mapped, filled image by image), image_ids.npy and scales.npy;
    a task adds its label arrays beside them."""

    def __init__(self, out_dir: Path, n: int, size: int, mode: str = "stretch", store: tuple[str, int] = ("npy", 90)):
        self.dir, self.n, self.size, self.mode, self.store = Path(out_dir), n, size, mode, store
        self.dir.mkdir(parents=True)
        if store[0] == "npy":
            self.array, self.shard = self.memmap("images.npy", np.uint8, (n, 3, size, size)), None
        else:  # encoded images in one shard file (dataset/encoded.py)
            self.array, self.shard = None, ShardWriter(self.dir, store[0], store[1], size)
        self.image_ids: list[int] = []
        self.scales: list[list[float]] = []

    @classmethod
    def for_params(cls, out_dir: Path, n: int, size: int, params: ParamsLike) -> "SplitWriter":
        """A writer with the resize mode and store of `preprocess`."""
        pre = typed(params).preprocess
        return cls(out_dir, n, size, pre.resize, (pre.store, pre.quality))

    def memmap(self, name: str, dtype, shape: tuple[int, ...]) -> np.ndarray:
        return np.lib.format.open_memmap(self.dir / name, mode="w+", dtype=dtype, shape=shape)

    def images(self, paths: list[str], by_path: dict, root: Path) -> Iterator[tuple[int, dict]]:
        """Resize and store each image (`fit_image`: stretched, or letterboxed); yields (index, manifest entry).

        Images are decoded and resized in a pool of worker processes on every core (`resize_all`),
        in order; the scales come from the manifest's width/height (snapshot checked them
        against the files), so a JPEG decoded at reduced scale still maps boxes exactly."""
        size = self.size
        jobs = [str(root / RAW_DIR / rel) for rel in paths]
        frames = [(by_path[rel]["width"], by_path[rel]["height"]) for rel in paths]
        pixels_of = resize_all(jobs, size, desc=f"preprocess {self.dir.name}", mode=self.mode, frames=frames,
                               store=self.store)
        for i, (rel, frame, pixels) in enumerate(zip(paths, frames, pixels_of)):
            entry = by_path[rel]
            w, h = fitted(*frame, size, self.mode)
            self.scales.append([w / frame[0], h / frame[1]])
            if self.shard is None:
                self.array[i] = pixels
            else:
                self.shard.append(pixels)  # already encoded by the worker
            self.image_ids.append(entry["image_id"])
            yield i, entry

    def close(self) -> None:
        if self.shard is None:
            self.array.flush()
            del self.array
        else:
            self.shard.close()
        np.save(self.dir / "image_ids.npy", np.asarray(self.image_ids, dtype=np.int64))
        np.save(self.dir / "scales.npy", np.asarray(self.scales, dtype=np.float32).reshape(-1, 2))


def write_processed(task, manifest: dict, splits: dict, params: ParamsLike, root: Path) -> dict:
    """Resize every split of `splits` into root/data/processed for `task` (`preprocess`); returns preprocess.json's
    content.

    Built beside the output, then swapped in: a crash leaves the old data or none, never half."""
    cfg = typed(params)
    pre = cfg.preprocess
    by_path = {f["path"]: f for f in manifest["files"]}
    out = root / PROCESSED_DIR
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in SPLIT_NAMES:
        task.write_split(tmp / name, splits["splits"][name], by_path, pre.size, root, cfg)
    info = {
        "size": pre.size,
        "mean": pre.mean,
        "std": pre.std,
        "layout": task.layout,
        "class_map": manifest["class_map"],
        "snapshot_id": manifest["snapshot_id"],
        "counts": {n: len(splits["splits"][n]) for n in SPLIT_NAMES},
        **task.preprocess_info(),
        **({"resize": pre.resize} if pre.resize != "stretch" else {}),  # stretch: the bytes of earlier releases
        **({"store": pre.store, "quality": pre.quality} if pre.store != "npy" else {}),
    }
    write_json(tmp / PROCESSED_INFO.name, info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


class ProcessedSplit:
    """Read access to one split written by `run` (images memory-mapped)."""

    def __init__(self, split_dir: Path):
        self.dir = Path(split_dir)
        encoded = (self.dir / "images.bin").exists()
        self.images = EncodedImages(self.dir) if encoded else np.load(self.dir / "images.npy", mmap_mode="r")
        self.image_ids = np.load(self.dir / "image_ids.npy")
        self.scales = np.load(self.dir / "scales.npy")
        self.offsets = self._optional("offsets.npy")  # detection
        self.boxes = self._optional("boxes.npy")  # detection
        self.labels = self._optional("labels.npy")  # detection: per box; classification: per image
        self.masks = self._optional("masks.npy", mmap_mode="r")  # segmentation

    def _optional(self, name: str, mmap_mode: str | None = None):
        path = self.dir / name
        return np.load(path, mmap_mode=mmap_mode) if path.exists() else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def target(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.boxes[a:b], self.labels[a:b]
