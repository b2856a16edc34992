"""Perceptual hashes for near-duplicate search: a 64-bit difference hash (dHash) per image, cached by content md5,
and a search for every pair within a Hamming distance that does not compare all pairs.

dHash (Krawetz): the image in grey, shrunk to 9 x 8 pixels, one bit per horizontally adjacent pair (is the
right pixel brighter?). A re-encode, a small resize or a colour tweak keeps nearly all 64 bits; another picture
differs in about half. Own code (PIL + numpy): `imagehash` is not among the project's pinned packages and
would bring scipy and PyWavelets for one function. JPEGs are decoded at 1/8 scale (libjpeg's draft mode), which
is where most of the time of hashing a photo would go; the EXIF orientation is applied, so the displayed
picture is hashed.

Search (multi-index hashing, Norouzi et al.): split the 64 bits into r + 1 chunks. Two hashes within distance
r agree exactly on at least one chunk (pigeonhole), so only images sharing a chunk value are compared: buckets
per chunk instead of n^2 / 2 pairs (100k images: ~10^6 candidate pairs instead of 5 x 10^9).

Cache: `.cvrepro/snapshot-dhash.tsv` beside the image check cache, one `md5<TAB>16 hex digits` line per
content: a new batch hashes only the contents it has not seen. Written atomically; a missing, unreadable or
other-format file only means hashing again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from cvrepro.core.fileio import atomic_write_chunks

FORMAT = "cvrepro.dhash/1 9x8 grey LANCZOS, JPEG draft 1/8, EXIF applied"  # change it when the hash changes
POOL_MIN_IMAGES = 200  # below this a process pool costs more to start than it saves


def dhash_file(path: str) -> int:
    """The 64-bit dHash of one image file (bit 63 = first pair of the top row)."""
    with Image.open(path) as im:
        if im.format in ("JPEG", "MPO"):
            im.draft("L", (36, 32))  # the smallest libjpeg scale still >= 4x the hash grid
        im = ImageOps.exif_transpose(im).convert("L")
        pixels = np.asarray(im.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _safe_dhash(path: str) -> int | None:
    """dhash_file, or None for a file that does not decode (snapshot checked headers and completeness only;
    preprocess decodes every image and names one that fails): it is then left out of the near search."""
    try:
        return dhash_file(path)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... for broken data
        return None


def _hash_all(paths: list[str], workers: int) -> list[int | None]:
    def progress():
        return tqdm(total=len(paths), desc="duplicates", unit="img", disable=None, file=sys.stderr)

    if workers <= 1 or len(paths) < POOL_MIN_IMAGES:
        with progress() as bar:
            return [bar.update() or _safe_dhash(p) for p in paths]
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        # map() forks the workers now, before tqdm may start its monitor thread (as images.inspect_all does)
        results = pool.map(_safe_dhash, paths, chunksize=64)
        with progress() as bar:
            return [bar.update() or h for h in results]


class HashCache:
    """md5 -> dHash of every content hashed before (see the module docstring)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, int] = {}
        if self.path is None:
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return
        if not lines or lines[0] != FORMAT:
            return
        for line in lines[1:]:
            md5, _, value = line.partition("\t")
            if len(md5) == 32 and len(value) == 16:
                with contextlib.suppress(ValueError):
                    self.entries[md5] = int(value, 16)

    def save(self, keep: list[str]) -> None:
        """Write the entries of the contents in `keep` (those still in the dataset)."""
        if self.path is None:
            return
        keep = sorted({m for m in keep if m in self.entries})
        head = [(FORMAT + "\n").encode("utf-8")]
        body = ("".join(f"{m}\t{self.entries[m]:016x}\n" for m in keep[i:i + 5000]).encode("utf-8")
                for i in range(0, len(keep), 5000))
        try:
            atomic_write_chunks(self.path, (chunk for part in (head, body) for chunk in part))
        except OSError as e:  # a read-only checkout still snapshots, only without the speed-up
            print(f"warning: {self.path}: cannot save the duplicate hash cache ({e.strerror or e})", file=sys.stderr)


def dhashes(raw_dir: Path, files: list[dict], cache_path: Path | None, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(the dHash of every manifest entry (`path`, `md5`) as uint64, whether it has one), in `files` order; only
    contents missing from the cache are read. A file that does not decode has none (and is not cached)."""
    cache = HashCache(cache_path)
    first: dict[str, str] = {}  # md5 -> the first path with it: copies are read once
    for f in files:
        if f["md5"] not in cache.entries:
            first.setdefault(f["md5"], f["path"])
    todo = sorted(first.items())
    raw = str(raw_dir) + "/"
    for (md5, _), value in zip(todo, _hash_all([raw + p for _, p in todo], workers)):
        if value is not None:
            cache.entries[md5] = value
    if todo or len(cache.entries) != len({f["md5"] for f in files}):
        cache.save([f["md5"] for f in files])
    values = [cache.entries.get(f["md5"]) for f in files]
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(files))
    return np.fromiter((v or 0 for v in values), dtype=np.uint64, count=len(files)), valid


def distance(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


def near_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Every pair (i, j, distance), i < j, with Hamming distance <= threshold, as an int64 array [P, 3] sorted by
    (distance, i, j). Multi-index search: threshold + 1 chunks of the 64 bits, candidates share a chunk value."""
    n = len(hashes)
    if n < 2 or threshold < 0:
        return np.zeros((0, 3), dtype=np.int64)
    chunks = min(threshold + 1, 64)
    bounds = np.linspace(0, 64, chunks + 1).astype(int)
    found = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        key = (hashes >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        found.append(_bucket_pairs(hashes, key, threshold))
    pairs = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 3), dtype=np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0], pairs[:, 2]))] if len(pairs) else pairs.reshape(0, 3)


def _bucket_pairs(hashes: np.ndarray, key: np.ndarray, threshold: int) -> np.ndarray:
    """Pairs within threshold among images sharing a value of `key`. Vectorised over all buckets at once: step k
    compares each image with the one k places after it in its bucket (as many steps as the largest bucket has
    images), so the work is the number of candidate pairs and the memory that of one step."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, n])
    bucket_size = np.repeat(sizes, sizes)
    left = bucket_size - (np.arange(n) - np.repeat(starts, sizes))  # images from here to the bucket's end
    idx = np.flatnonzero(left > 1)
    out, step = [], 1
    while len(idx):
        a, b = order[idx], order[idx + step]
        d = np.bitwise_count(hashes[a] ^ hashes[b]).astype(np.int64)
        hit = d <= threshold
        if hit.any():
            lo, hi = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
            out.append(np.stack([lo, hi, d[hit]], axis=1))
        step += 1
        idx = idx[left[idx] > step]
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), dtype=np.int64)
