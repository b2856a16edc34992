"""Processed images stored encoded (PNG, JPEG or WebP) in one shard file per split.

A raw uint8 array costs 3 x S^2 bytes per image (1.2 MB at 640 px, and DVC caches it a
second time); encoded, a photo takes a tenth of that or less. Layout of a split folder:
`images.bin` (the encoded images one after the other), `images_index.npy` (int64 [N+1]:
image i is bytes index[i]:index[i+1]) and `images_store.json` (format, quality, size).
`EncodedImages` reads it like the uint8 array it replaces (len, [i], [a:b], .shape), with
`os.pread` on one descriptor per process, so DataLoader workers decode in parallel.
Encoding is deterministic (fixed encoder settings, no timestamps): reruns give the same bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cvrepro.core.fileio import CvreproError, read_json, write_json



def encode(pixels: np.ndarray, store: str, quality: int) -> bytes:
    """uint8 [3,S,S] -> the bytes of one image (PNG lossless; JPEG 4:4:4 at quality >= 90; WebP lossless at 100)."""
    im = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    buf = io.BytesIO()
    if store == "png":
        im.save(buf, "PNG", compress_level=6)
    elif store == "jpeg":
        im.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False)
    elif store == "webp":
        im.save(buf, "WEBP", quality=quality, lossless=quality == 100, method=4, exact=True)
    else:
        raise CvreproError(f"cannot encode as '{store}'")
    return buf.getvalue()


class ShardWriter:
    """Appends encoded images to images.bin; `close` writes the index and the store description."""

    def __init__(self, folder: Path, store: str, quality: int, size: int):
        self.folder, self.store, self.quality, self.size = Path(folder), store, quality, size
        self.file = open(self.folder / "images.bin", "wb")
        self.index = [0]

    def append(self, data: bytes) -> None:
        self.file.write(data)
        self.index.append(self.index[-1] + len(data))

    def close(self) -> None:
        self.file.close()
        np.save(self.folder / "images_index.npy", np.asarray(self.index, dtype=np.int64))
        write_json(self.folder / "images_store.json", {"format": self.store, "quality": self.quality,
                                                       "size": self.size})


class EncodedImages:
    """The images of a split folder written by `ShardWriter`, read like a uint8 [N,3,S,S] array."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index = np.load(self.folder / "images_index.npy")
        meta = read_json(self.folder / "images_store.json")
        self.shape = (len(self.index) - 1, 3, int(meta["size"]), int(meta["size"]))
        self.dtype = np.dtype(np.uint8)
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict:  # a DataLoader worker started by spawn opens its own descriptor
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, i: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.folder / "images.bin", os.O_RDONLY), os.getpid()
        a, b = int(self.index[i]), int(self.index[i + 1])
        return os.pread(self._fd, b - a, a)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        with Image.open(io.BytesIO(self._read(i % len(self)))) as im:
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
