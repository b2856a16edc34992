"""Benchmark duplicate detection (issue 20): what it adds to snapshot, what a new batch costs, and the search at 100k.

    .venv/bin/python benchmarks/bench_duplicates.py [--images N] [--size WxH] [--search-images M] [--repeat R] [--json]

Everything is synthetic, in a temporary directory removed afterwards; each figure has a baseline from the same run.

snapshot (N images, default 10000, 640x480 JPEGs with photo-like grain, 1% of them copies of others: half the
  same bytes, half re-encoded at quality 70; `git init`, `dvc init`, `dvc add data/raw` untimed). A snapshot here is
  what the stage runs: `build_manifest` (checks, labels) + `find_duplicates` (dHash of every image, search, groups,
  conflicts), each in a fresh process (`--child`), best of R:
  md5sum       `md5sum` over every file: the floor (reading and hashing the bytes once)
  first        no cache: every image checked and dHashed, every label parsed
  incremental  1% new images added (a few of them copies of old ones), `dvc add` again (untimed), the caches as the
               last snapshot before the batch left them: only the new images are checked and hashed
  full         the same data, no cache: what incremental is compared with (acceptance: incremental <= 0.15 x full)
  memory       the largest peak RSS growth of a run, per image
search (M hashes, default 100000, in a fresh process): `near_pairs` at threshold 3 + `find_groups`, on uniformly
  random hashes with 1% planted copies (0-3 bits flipped) and on a skewed set (2000 "scenes", each hash a scene's
  with 0-12 bits flipped), against dHashing M files (per-image time of the benchmark's own JPEGs, times M).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
SIZE = (640, 480)


_GRAIN: dict[tuple[int, int], np.ndarray] = {}


def _picture(seed: int, size: tuple[int, int], quality: int = 85) -> bytes:
    """A distinct photo-like JPEG (~85 KB at 640x480, like a photo): a random 12x9 field smoothly upsampled (which
    sets its dHash) plus sensor-like grain (one Gaussian field per process, shifted by the seed: generating it per
    image cost more than encoding)."""
    rng = np.random.default_rng(seed)
    if size not in _GRAIN:
        _GRAIN[size] = np.random.default_rng(0).normal(0, 12, (size[1], size[0] * 2, 3)).astype(np.float32)
    shift = int(rng.integers(size[0]))
    field = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(field, dtype=np.float32) + _GRAIN[size][:, shift:shift + size[0]]
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _job(args: tuple) -> tuple[str, bytes]:
    name, seed, quality, size = args
    return name, _picture(seed, size, quality)


def _write(root: Path, jobs: list[tuple], copies: list[tuple[str, str]], index: dict, size: tuple[int, int]) -> None:
    """Encode `jobs` (name, seed, quality) on every core, write exact `copies` (new, of), extend the COCO index."""
    raw = root / "data/raw"
    with Pool(os.cpu_count() or 1) as pool:
        for name, data in pool.imap_unordered(_job, jobs, chunksize=32):
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            (raw / name).write_bytes(data)
    for new, of in copies:
        (raw / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw / of, raw / new)
    for name in [j[0] for j in jobs] + [c[0] for c in copies]:
        i = len(index["images"]) + 1
        w, h = size
        index["images"].append({"id": i, "file_name": name, "width": w, "height": h})
        index["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [40, 30, 200, 150],
                                     "area": 30000, "iscrowd": 0})
    (root / "data/labels").mkdir(parents=True, exist_ok=True)
    (root / "data/labels/annotations.json").write_text(json.dumps(index))


def _name(i: int) -> str:
    return f"images/{i // 1000:03d}/img_{i:06d}.jpg"


def _batch(start: int, n: int, size: tuple[int, int]) -> tuple[list[tuple], list[tuple]]:
    """n images numbered from `start`: 99% distinct, 0.5% byte copies and 0.5% re-encodes (quality 70) of an
    earlier distinct image."""
    jobs, copies = [], []
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        j = int(rng.integers(max(i, 1)))
        j -= j % 200 if j % 200 < 2 else 0  # an original, not itself a copy
        j += 2 if j % 200 == 0 else 0
        if i % 200 == 0 and j < i:
            copies.append((_name(i), _name(j)))
        elif i % 200 == 1 and j < i:
            jobs.append((_name(i), j, 70, size))  # image j's picture (seed j), re-encoded
        else:
            jobs.append((_name(i), i, 85, size))
    return jobs, copies


def _child(root: str, cache_dir: str) -> None:
    """One snapshot as the stage runs it, in this fresh process: time and peak RSS growth as JSON."""
    from cvrepro import tasks
    from cvrepro.dataset.duplicates import find_duplicates, settings
    from cvrepro.dataset.images import default_workers
    from cvrepro.dataset.listing import dvc_listing
    from cvrepro.dataset.manifest import build_manifest

    task = tasks.get("detection")
    r, cache = Path(root), Path(cache_dir)
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    manifest = build_manifest(r / "data/raw", r / "data/labels/annotations.json", task=task,
                              dvc_listing=dvc_listing(r), check_cache=cache / "snapshot-checks.tsv")
    t1 = time.perf_counter()
    dups = find_duplicates(manifest, r / "data/raw", r / "data/labels/annotations.json", task, settings({}),
                           cache_dir=cache, workers=default_workers())
    t2 = time.perf_counter()
    print(json.dumps({"seconds": t2 - t0, "manifest_s": t1 - t0, "duplicates_s": t2 - t1,
                      "rss_kb": _status_kb("VmHWM") - rss0, "snapshot_id": manifest["snapshot_id"],
                      "counts": dups["counts"]}))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env={**os.environ, "TQDM_DISABLE": "1"},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _sh(cmd: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - start


def bench_snapshot(n: int, size: tuple[int, int], repeat: int, tmp: Path) -> dict:
    root = tmp / "snap"
    index = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    t0 = time.perf_counter()
    _write(root, *_batch(0, n, size), index, size)
    gen = time.perf_counter() - t0
    _sh(f"git init -q && {BIN}/dvc init -q && {BIN}/dvc config cache.type hardlink,copy", root)
    add = _sh(f"{BIN}/dvc add -q data/raw", root)
    md5sum = min(_sh("find data/raw -type f -print0 | xargs -0 md5sum > /dev/null", root) for _ in range(2))
    cache = root / ".cvrepro"
    names = ("snapshot-checks.tsv", "snapshot-labels.json", "snapshot-dhash.tsv")

    def best(before_each) -> dict:
        runs = []
        for _ in range(repeat):
            before_each()
            runs.append(_run_child("--child", str(root), str(cache)))
        assert len({r["snapshot_id"] for r in runs}) == 1
        return {**min(runs, key=lambda r: r["seconds"]), "rss_kb": max(r["rss_kb"] for r in runs)}

    def no_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()

    first = best(no_cache)
    kept = {name: (cache / name).read_bytes() for name in names}
    batch = max(1, n // 100)
    _write(root, *_batch(n, batch, size), index, size)
    add2 = _sh(f"{BIN}/dvc add -q data/raw", root)

    def as_before_the_batch() -> None:
        for name, data in kept.items():
            (cache / name).write_bytes(data)

    incremental = best(as_before_the_batch)
    full = best(no_cache)
    assert incremental["snapshot_id"] == full["snapshot_id"] and incremental["counts"] == full["counts"]
    hash_rate = _dhash_rate(root, 300)
    shutil.rmtree(root)
    return {"images": n, "added": batch, "size": f"{size[0]}x{size[1]}", "repeat": repeat,
            "generate_s": round(gen, 1), "dvc_add_s": round(add, 1), "dvc_add_after_batch_s": round(add2, 1),
            "md5sum_s": round(md5sum, 2), "first_s": round(first["seconds"], 2),
            "first_duplicates_s": round(first["duplicates_s"], 2), "incremental_s": round(incremental["seconds"], 3),
            "incremental_duplicates_s": round(incremental["duplicates_s"], 3), "full_s": round(full["seconds"], 2),
            "first_over_md5sum": round(first["seconds"] / md5sum, 2),
            "duplicates_share_of_first": round(first["duplicates_s"] / first["seconds"], 3),
            "incremental_over_full": round(incremental["seconds"] / full["seconds"], 3),
            "bytes_per_image_first": round(first["rss_kb"] * 1024 / n),
            "bytes_per_image_incremental": round(incremental["rss_kb"] * 1024 / (n + batch)),
            "duplicates_found": full["counts"], "dhash_ms_per_image": round(1000 / hash_rate, 3)}


def _dhash_rate(root: Path, k: int) -> float:
    """Images dHashed per second (one process) on k of the benchmark's files."""
    from cvrepro.dataset.dhash import dhash_file

    files = sorted((root / "data/raw/images").rglob("*.jpg"))[:k]
    start = time.perf_counter()
    for f in files:
        dhash_file(str(f))
    return len(files) / (time.perf_counter() - start)


def _search_child(m: int, skewed: bool) -> None:
    from cvrepro.dataset.dhash import near_pairs
    from cvrepro.dataset.duplicates import find_groups

    rng = np.random.default_rng(1)
    if skewed:
        scenes = rng.integers(0, 2**63, 2000, dtype=np.uint64) << np.uint64(1)
        hashes = scenes[rng.integers(0, 2000, m)]
        flips = rng.integers(0, 13, m)
    else:
        hashes = rng.integers(0, 2**63, m, dtype=np.uint64) << np.uint64(1)
        planted = rng.choice(m, m // 100, replace=False)
        hashes[planted] = hashes[rng.integers(0, m, len(planted))]
        flips = np.zeros(m, dtype=np.int64)
        flips[planted] = rng.integers(0, 4, len(planted))
    for i in np.flatnonzero(flips):
        for bit in rng.choice(64, int(flips[i]), replace=False):
            hashes[i] ^= np.uint64(1) << np.uint64(int(bit))
    files = [{"path": f"{i:07d}.jpg", "md5": f"{i:032x}"} for i in range(m)]
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = _status_kb("VmRSS")
    start = time.perf_counter()
    pairs = near_pairs(hashes, 3)
    search = time.perf_counter() - start
    groups = find_groups(files, hashes, 3)
    total = time.perf_counter() - start
    print(json.dumps({"search_s": search, "search_and_groups_s": total, "pairs": len(pairs), "groups": len(groups),
                      "rss_kb": _status_kb("VmHWM") - rss0}))


def bench_search(m: int, dhash_ms: float) -> dict:
    out = {"hashes": m, "threshold": 3, "dhash_files_s_estimate": round(m * dhash_ms / 1000, 1)}
    for name in ("uniform", "skewed"):
        r = _run_child("--search-child", str(m), name)
        out[name] = {"search_s": round(r["search_s"], 3), "search_and_groups_s": round(r["search_and_groups_s"], 3),
                     "pairs": r["pairs"], "groups": r["groups"], "rss_growth_mb": round(r["rss_kb"] / 1024, 1),
                     "over_hashing_files": round(r["search_and_groups_s"] / (m * dhash_ms / 1000), 4)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--size", default="640x480")
    p.add_argument("--search-images", type=int, default=100000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--search-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    if args.search_child:
        _search_child(int(args.search_child[0]), args.search_child[1] == "skewed")
        return 0
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="cvrepro-dups-") as tmp:
        snap = bench_snapshot(args.images, size, args.repeat, Path(tmp))
    search = bench_search(args.search_images, snap["dhash_ms_per_image"])
    result = {"benchmark": "duplicates", "snapshot": snap, "search": search, "cpus": os.cpu_count(),
              "python": platform.python_version(), "platform": platform.platform()}
    if not args.json:
        print(f"snapshot {snap['images']} images {snap['size']} (+{snap['added']}): md5sum {snap['md5sum_s']} s, first "
              f"{snap['first_s']} s ({snap['first_duplicates_s']} s of it duplicates), incremental "
              f"{snap['incremental_s']} s, full {snap['full_s']} s: incremental/full {snap['incremental_over_full']}")
        for name in ("uniform", "skewed"):
            s = search[name]
            print(f"search {search['hashes']} hashes ({name}): {s['search_and_groups_s']} s, {s['pairs']} pairs, "
                  f"{s['rss_growth_mb']} MB; dHashing the files ~{search['dhash_files_s_estimate']} s "
                  f"(search/hashing {s['over_hashing_files']})")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
