"""Reading images: the checked decode snapshot runs on every file (in a process pool on
large datasets, with a progress bar), and the one RGB reader preprocess, prediction and pictures use.

Raw files are stored as delivered; a JPEG's EXIF orientation (phones, cameras) is applied
when it is read, so sizes and pixels are always those of the displayed frame, the one
labelling tools draw boxes in.

Built for 100 000+ images: images are read one at a time (never all pixels in memory),
JPEGs are decoded at reduced scale, PNGs are CRC-checked rather than decoded.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # orientations whose displayed width is the stored height

# Below this many images a process pool costs more to start than it saves.
POOL_MIN_IMAGES = 500


def default_workers() -> int:
    """2 workers on Linux with CPUs to spare; on a 1-2 CPU box the pool measured no faster than serial."""
    return 2 if sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= 3 else 1


def orientation(im: Image.Image) -> int:
    """The EXIF orientation 1..8 (1 without one or with a broken EXIF block, as most viewers do)."""
    try:
        if im.format == "PNG":  # getexif() would decode the pixels (and spoil verify()): read the eXIf chunk
            exif = Image.Exif()
            exif.load(im.info.get("exif") or b"")
        else:
            exif = im.getexif()
        value = exif.get(EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def jpeg_complete(data: bytes) -> bool | None:
    """Does a JPEG stream run to its end-of-image marker? Walks the marker segments up to the first scan, then
    looks for EOI (FF D9), which entropy-coded data cannot hold (an FF there is followed by 00 or a restart
    marker), so a thumbnail inside EXIF does not count. Truncation, the usual damage of a copy or a download,
    removes it. None when the segments cannot be walked (then decode to find out)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker == 0xDA:  # start of scan: the entropy-coded data follows
            return data.find(b"\xff\xd9", i + 2) != -1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False  # ended before any scan: truncated in the headers


def check_decodes(data: bytes) -> tuple[int, int]:
    """Open and check the image; return its displayed (width, height), EXIF orientation applied. Raises if it is
    broken: unreadable headers or a truncated file. Pixels are not decoded where the format lets the file be
    checked without (PNG chunk CRCs, the JPEG end-of-image marker): preprocess decodes every image anyway and
    names a file it cannot decode. On 640x480 JPEGs this took the first snapshot from 12x to 3-4x the time of
    md5sum (benchmarks/README.md, bench_scale.py)."""
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
        displayed = size[::-1] if orientation(im) in QUARTER_TURNS else size
        if im.format == "PNG":
            im.verify()  # CRC of every chunk through IEND: catches truncation without inflating pixels
        elif im.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras
            complete = jpeg_complete(data)
            if complete is False:
                raise OSError("image file is truncated (no end-of-image marker)")
            if complete is None:  # segments we cannot walk: decode at 1/8 scale (libjpeg reads all the data)
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
        else:
            im.load()
    return displayed


def inspect_image(path: str, want_md5: bool) -> tuple[str | None, int, str | None, tuple[int, int] | None, int | None]:
    """(error, size in bytes, md5 or None, (width, height), mtime_ns). Reads the file once; errors are returned, not
    raised, so a worker process never dies on a bad image. mtime_ns is the file's as it was opened, None if it
    changed size while it was read: an edit during the check is not taken for what was checked."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return "file not found", 0, None, None, None
    except IsADirectoryError:
        return "is a directory, not an image file", 0, None, None, None
    except OSError as e:
        return f"cannot read: {e.strerror or e}", 0, None, None, None
    md5 = hashlib.md5(data).hexdigest() if want_md5 else None
    try:
        dims = check_decodes(data)
    except UnidentifiedImageError:
        return "unreadable: not an image format PIL can identify", len(data), md5, None, None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for broken files
        return f"unreadable or truncated image ({type(e).__name__}: {e})", len(data), md5, None, None
    return None, len(data), md5, dims, st.st_mtime_ns if st.st_size == len(data) else None


def inspect_all(jobs: Iterable[tuple[str, bool]], total: int, workers: int) -> Iterator[tuple]:
    """Results of inspect_image for each of the `total` jobs, in order, with a progress bar on stderr."""
    if workers <= 1 or total < POOL_MIN_IMAGES:
        yield from _with_progress((inspect_image(*job) for job in jobs), total)
        return
    # fork, not spawn: spawn re-imports the caller's __main__, which breaks any script without a
    # `__name__ == "__main__"` guard. map() forks the workers now, before tqdm may start its monitor
    # thread (forking a process that runs threads can deadlock).
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        results = pool.map(inspect_image, *zip(*jobs), chunksize=32)
        try:
            yield from _with_progress(results, total)
        finally:  # the caller may stop early (too many problems): drop queued work
            pool.shutdown(cancel_futures=True)


def _with_progress(results: Iterable[tuple], total: int) -> Iterator[tuple]:
    with tqdm(total=total, desc="snapshot", unit="img", disable=None, file=sys.stderr) as bar:
        for r in results:
            bar.update()
            yield r


def load_image_rgb(path: "Path | str | io.BytesIO", draft: tuple[int, int] | None = None) -> Image.Image:
    """An image as RGB pixels in the displayed frame (EXIF orientation applied).

    draft: the smallest displayed (width, height) the caller needs; a JPEG is then decoded at the
    largest reduced scale (1/2, 1/4, 1/8) still at least that big, which costs about half the time
    of a full decode. The result is then smaller than the image: take the original size elsewhere."""
    with Image.open(path) as im:
        if draft is not None and im.format in ("JPEG", "MPO"):
            if orientation(im) in (5, 6, 7, 8):  # a quarter turn: the stored frame is the other way round
                draft = (draft[1], draft[0])
            im.draft("RGB", draft)
        return ImageOps.exif_transpose(im).convert("RGB")
