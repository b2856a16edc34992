"""Benchmark the snapshot stage: hashing every image vs reusing the md5s DVC recorded at `dvc add`.

    .venv/bin/python benchmarks/bench_snapshot.py [--images N] [--size WxH] [--format PNG|JPEG]
                                                  [--repeat R] [--workers W] [--scale] [--json]

Builds a synthetic COCO detection dataset in a temporary directory (random-noise
images, 1-3 boxes each), runs real `git init`, `dvc init` and `dvc add data/raw`
with the venv's dvc, then times, in this one process and interleaved:

  (a) build_manifest(..., dvc_listing=None)          every file read, md5'd and checked
  (b) build_manifest(..., dvc_listing=dvc_listing())  md5s taken from DVC's .dir object
                                                      (reading that listing is inside the timing)

each best of R (default 3), and reports images/s for both and the ratio (b)/(a):
the baseline (a) runs in the same process, on the same files, so the ratio holds
across machines better than either absolute figure. Both manifests must have the
same snapshot_id, or the benchmark fails.

Memory: peak RSS of this process (getrusage ru_maxrss), and the RSS just before
the timed runs, so the growth caused by build_manifest shows on its own.
`--scale` runs N and 4N images, each in a fresh process (ru_maxrss never goes
down within one), and prints the RSS of each.

The files were just written, so they are in the page cache: this measures
hashing/decoding cost, not a cold disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from cvrepro import tasks
from cvrepro.core.paths import ANNOTATIONS, RAW_DIR
from cvrepro.dataset.images import default_workers
from cvrepro.dataset.listing import dvc_listing
from cvrepro.dataset.manifest import build_manifest

CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "bicycle"}]
MB = 1024 * 1024


# --------------------------------------------------------------------------- measuring


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux /proc); None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / MB, 1)


# --------------------------------------------------------------------------- dataset


def make_dataset(root: Path, n: int, size: tuple[int, int], fmt: str, seed: int) -> int:
    """Write n noise images under root/data/raw/images and their COCO labels; return the images' total bytes."""
    width, height = size
    rng = random.Random(seed)
    image_dir = root / RAW_DIR / "images"
    image_dir.mkdir(parents=True)
    ext = "png" if fmt == "PNG" else "jpg"
    # compress_level=1: noise does not compress anyway, and level 6 only makes generation slower.
    save_kwargs = {"compress_level": 1} if fmt == "PNG" else {"quality": 90}
    images, annotations, total = [], [], 0
    for i in range(1, n + 1):
        name = f"images/{i:07d}.{ext}"
        im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        path = root / RAW_DIR / name
        im.save(path, fmt, **save_kwargs)
        total += path.stat().st_size
        images.append({"id": i, "file_name": name, "width": width, "height": height})
        for _ in range(rng.randint(1, 3)):
            w, h = rng.randint(2, max(2, width // 2)), rng.randint(2, max(2, height // 2))
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": rng.randint(1, 3),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    ann_path = root / ANNOTATIONS
    ann_path.parent.mkdir(parents=True)
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return total


def run_tool(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_snapshot: `{' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stderr or proc.stdout}")


def dvc_version(dvc: str) -> str | None:
    try:
        return subprocess.run([dvc, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------- one benchmark run


def timed_build(root: Path, use_listing: bool, workers: int) -> tuple[float, str, int]:
    """(seconds, snapshot_id, files in the DVC listing or 0) for one build_manifest call; progress bar silenced."""
    with contextlib.redirect_stderr(io.StringIO()):  # tqdm disables itself on a non-tty stream
        start = time.perf_counter()
        listing = dvc_listing(root) if use_listing else None
        manifest = build_manifest(root / RAW_DIR, root / ANNOTATIONS, task=tasks.get("detection"), dvc_listing=listing,
                                  workers=workers)
        elapsed = time.perf_counter() - start
    return elapsed, manifest["snapshot_id"], len(listing or {})


def bench(n: int, size: tuple[int, int], fmt: str, repeat: int, workers: int | None, seed: int) -> dict:
    dvc = str(Path(sys.executable).parent / "dvc")
    if not os.access(dvc, os.X_OK):
        sys.exit(f"bench_snapshot: {dvc} not found; run `make venv` first")
    if shutil.which("git") is None:
        sys.exit("bench_snapshot: git not found on PATH")
    if workers is None:
        workers = default_workers()  # what `cvrepro` would use on this machine

    with tempfile.TemporaryDirectory(prefix="cvrepro-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        dataset_bytes = make_dataset(root, n, size, fmt, seed)
        t1 = time.perf_counter()
        run_tool(["git", "init", "-q"], root)
        run_tool([dvc, "init", "-q"], root)
        t2 = time.perf_counter()
        run_tool([dvc, "add", "-q", str(RAW_DIR)], root)
        t3 = time.perf_counter()

        rss_before, peak_before = current_rss_bytes(), peak_rss_bytes()
        times: dict[str, list[float]] = {"hash_all": [], "dvc_listing": []}
        ids, listed = set(), 0
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits both modes alike
            for mode in times:
                elapsed, snapshot_id, count = timed_build(root, mode == "dvc_listing", workers)
                times[mode].append(elapsed)
                ids.add(snapshot_id)
                listed = max(listed, count)
        peak_after = peak_rss_bytes()

    if listed != n:
        sys.exit(f"bench_snapshot: the DVC listing held {listed} files, expected {n}; (b) did not use it")
    if len(ids) != 1:
        sys.exit(f"bench_snapshot: the two modes gave different snapshot ids: {sorted(ids)}")

    best = {mode: min(ts) for mode, ts in times.items()}
    growth = None if rss_before is None else peak_after - rss_before
    return {
        "benchmark": "snapshot",
        "images": n,
        "size": f"{size[0]}x{size[1]}",
        "format": fmt,
        "dataset_mb": _mb(dataset_bytes),
        "workers": workers,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "repeat": repeat,
        "generate_s": round(t1 - t0, 2),
        "git_dvc_init_s": round(t2 - t1, 2),
        "dvc_add_s": round(t3 - t2, 2),
        "hash_all_s": round(best["hash_all"], 3),
        "dvc_listing_s": round(best["dvc_listing"], 3),
        "hash_all_images_per_s": round(n / best["hash_all"], 1),
        "dvc_listing_images_per_s": round(n / best["dvc_listing"], 1),
        "hash_all_mb_per_s": round(dataset_bytes / MB / best["hash_all"], 1),
        "dvc_listing_mb_per_s": round(dataset_bytes / MB / best["dvc_listing"], 1),
        "ratio_dvc_listing_over_hash_all": round(best["hash_all"] / best["dvc_listing"], 3),
        "times_s": {mode: [round(t, 3) for t in ts] for mode, ts in times.items()},
        "snapshot_id": ids.pop(),
        "rss_before_timing_mb": _mb(rss_before),
        "peak_rss_before_timing_mb": _mb(peak_before),
        "peak_rss_mb": _mb(peak_after),
        "rss_growth_mb": _mb(growth),
        "rss_growth_bytes_per_image": None if growth is None else round(growth / n),
        "python": platform.python_version(),
        "dvc": dvc_version(dvc),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------- output


def print_table(r: dict) -> None:
    print(f"snapshot benchmark: {r['images']} {r['format']} images {r['size']} ({r['dataset_mb']} MB), "
          f"workers={r['workers']}, cpus={r['cpus']}, best of {r['repeat']}")
    print(f"setup (untimed): generate {r['generate_s']} s, git+dvc init {r['git_dvc_init_s']} s, "
          f"dvc add {r['dvc_add_s']} s")
    print(f"  {'mode':<34}{'best s':>9}{'images/s':>11}{'MB/s':>9}")
    for label, key in (("(a) hash every file (baseline)", "hash_all"), ("(b) md5s from the DVC listing", "dvc_listing")):
        print(f"  {label:<34}{r[key + '_s']:>9.3f}{r[key + '_images_per_s']:>11.1f}{r[key + '_mb_per_s']:>9.1f}")
    print(f"  ratio (b)/(a), images/s: {r['ratio_dvc_listing_over_hash_all']:.2f}x   (same snapshot_id both ways)")
    print(f"memory: RSS before timing {r['rss_before_timing_mb']} MB, peak {r['peak_rss_mb']} MB, "
          f"growth {r['rss_growth_mb']} MB = {r['rss_growth_bytes_per_image']} bytes/image")


def run_scale(args: argparse.Namespace) -> None:
    """N and 4N, each in a fresh interpreter so each peak RSS is its own."""
    results = []
    for n in (args.images, 4 * args.images):
        cmd = [sys.executable, __file__, "--images", str(n), "--size", args.size, "--format", args.format,
               "--repeat", str(args.repeat), "--seed", str(args.seed), "--json"]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"bench_snapshot: the run with {n} images failed (exit {proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        if not args.json:
            print_table(result)
            print()
    small, large = results
    summary = {
        "benchmark": "snapshot-scale",
        "runs": results,
        "peak_rss_mb": [r["peak_rss_mb"] for r in results],
        "peak_rss_ratio_4n_over_n": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "dataset_mb": [r["dataset_mb"] for r in results],
    }
    if not args.json:
        print(f"  {'images':>8}{'data MB':>10}{'RSS before MB':>15}{'peak RSS MB':>13}{'growth MB':>11}{'B/image':>9}")
        for r in results:
            print(f"  {r['images']:>8}{r['dataset_mb']:>10}{r['rss_before_timing_mb']:>15}{r['peak_rss_mb']:>13}"
                  f"{r['rss_growth_mb']:>11}{r['rss_growth_bytes_per_image']:>9}")
        print(f"  peak RSS 4N/N: {summary['peak_rss_ratio_4n_over_n']:.2f}x for 4x the images "
              f"({small['dataset_mb']} -> {large['dataset_mb']} MB of image data)")
    print(json.dumps(summary, sort_keys=True))


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 128x96, got {text!r}") from None
    if w < 4 or h < 4:
        raise argparse.ArgumentTypeError(f"images must be at least 4x4, got {text!r}")
    return w, h


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=positive, default=5000, help="number of images (default 5000)")
    p.add_argument("--size", default="128x96", help="image size WxH (default 128x96)")
    p.add_argument("--format", default="PNG", type=str.upper, choices=["PNG", "JPEG"], help="default PNG")
    p.add_argument("--repeat", type=positive, default=3, help="timed runs per mode, best is kept (default 3)")
    p.add_argument("--workers", type=positive, default=None,
                   help="build_manifest workers (default: what snapshot picks on this machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default 0)")
    p.add_argument("--scale", action="store_true", help="run N and 4N images, each in a fresh process, and "
                   "compare their peak RSS")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size)
    except argparse.ArgumentTypeError as e:
        p.error(f"--size: {e}")

    if args.scale:
        run_scale(args)
        return
    result = bench(args.images, size, args.format, args.repeat, args.workers, args.seed)
    if not args.json:
        print_table(result)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
