"""Benchmark the data path at real sizes: snapshot, preprocess, processed storage, evaluation.

    .venv/bin/python benchmarks/bench_scale.py [--images N ...] [--preprocess-images P] [--eval-images E]
                                               [--skip snapshot,preprocess,storage,evaluate] [--json]

Everything is synthetic, in a temporary directory removed afterwards, and every figure
is reported with a baseline measured in the same run (ratios are what compare across
machines):

snapshot (per N of --images, default 20000; the issue's sizes are 20000 and 100000):
  N JPEG files (--snapshot-size, default 160x120; --snapshot-grain adds noise: 12 makes a 640x480 file 83 KB, like a
  photo) + a COCO index, `git init`, `dvc init`, `dvc add data/raw` (untimed);
  md5sum        `md5sum` over every file (the floor: reading and hashing the bytes once)
  first         `build_manifest` with DVC's listing and no cache (every image opened, every label parsed)
  unchanged     the same again: the image check cache and the label cache say nothing changed
  incremental   1% of the images replaced, `dvc add` again (untimed), `build_manifest` with both caches
  full          the same data with no cache: what incremental is compared with
  memory        peak RSS growth of the process running `build_manifest`, per image (each run in a fresh
                process: ru_maxrss never goes down)
  Every figure is the best of --repeat fresh processes (default 3), the caches set up alike before each.
preprocess: P 640x480 JPEGs resized to 128 px, the way preprocess did before (serial, full
  decode) against now (a process per core, reduced-scale JPEG decode): images/s and per core.
storage: bytes per image of data/processed's images at 128 and 640 px, per store (npy, png, jpeg 90, webp 90).
evaluate: E images (default 5000) with 3 slice values: bare pycocotools the way evaluation
  ran before (the split, then each slice value again, each on a deep copy) against
  `split_metrics` (faster-coco-eval, one matching, slices accumulated); the figures must be equal.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent


def _jpeg(rng: np.random.Generator, size: tuple[int, int], quality: int = 85, grain: float = 0.0) -> bytes:
    """A synthetic photo: gradient background and a few flat blocks, plus Gaussian sensor-like grain of
    standard deviation `grain` (0: smooth, which compresses far better than a photo: 17 KB at 640x480;
    12: 83 KB, about half the average file of COCO val2017, whose images are mostly 640x480)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 200, 3)
    pixels = np.stack([(x * 255 // w + base[0]) % 256, (y * 255 // h + base[1]) % 256,
                       ((x + y) * 127 // (w + h) + base[2]) % 256], -1).astype(np.uint8)
    for _ in range(3):
        bw, bh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 8, h // 3))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        pixels[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 256, 3)
    if grain:
        pixels = np.clip(pixels + rng.normal(0, grain, pixels.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _unique(base: bytes, i: int) -> bytes:
    """`base` with a COM (comment) segment naming `i` after its SOI marker: a valid JPEG with its own md5, so
    100k distinct files cost a file write each instead of an encode each; the check reads every byte anyway."""
    text = f"cvrepro bench image {i}".encode()
    return base[:2] + b"\xff\xfe" + (2 + len(text)).to_bytes(2, "big") + text + base[2:]


def _sh(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - start


# --------------------------------------------------------------------------- snapshot


def _snapshot_child(root: str, cache: str) -> None:
    """Runs in a fresh process: one build_manifest, its time and peak RSS growth as JSON."""
    from cvrepro import tasks
    from cvrepro.dataset.listing import dvc_listing
    from cvrepro.dataset.manifest import build_manifest

    task = tasks.get("detection")  # imports (numpy, ...) are the process's start-up, not the snapshot's work
    root_p = Path(root)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss0 = _status_kb("VmRSS")
    start = time.perf_counter()
    manifest = build_manifest(root_p / "data/raw", root_p / "data/labels/annotations.json", task=task,
                              dvc_listing=dvc_listing(root_p), check_cache=Path(cache))
    seconds = time.perf_counter() - start
    rss1 = _status_kb("VmHWM")
    print(json.dumps({"seconds": seconds, "rss_kb": rss1 - rss0, "snapshot_id": manifest["snapshot_id"],
                      "files": len(manifest["files"])}))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _snapshot_run(root: Path, cache: Path) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1"}  # cvrepro comes from the venv (`pip install -e .`)
    out = subprocess.run([sys.executable, __file__, "--snapshot-child", str(root), str(cache)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_snapshot(n: int, tmp: Path, seed: int = 0, size: tuple[int, int] = (160, 120), repeat: int = 3,
                   grain: float = 0.0) -> dict:
    from cvrepro.core.fileio import write_json

    root = tmp / f"snap{n}"
    raw = root / "data/raw/images"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    pool = [_jpeg(rng, size, grain=grain) for _ in range(min(n, 256))]  # distinct pictures; each file made unique below
    images, anns = [], []
    for i in range(n):
        name = f"images/{i // 1000:03d}/img_{i:06d}.jpg"
        (root / "data/raw" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "data/raw" / name).write_bytes(_unique(pool[i % len(pool)], i))
        images.append({"id": i + 1, "file_name": name, "width": size[0], "height": size[1]})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 3, "bbox": [10, 10, 40, 30],
                     "area": 1200, "iscrowd": 0})
    write_json(root / "data/labels/annotations.json",
               {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]})
    gen = time.perf_counter() - t0
    setup = _sh(["git", "init", "-q"], root) + _sh([str(BIN / "dvc"), "init", "-q"], root)
    # the cache links the files instead of copying them: 100k photos are not stored twice on the bench's disk
    setup += _sh([str(BIN / "dvc"), "config", "cache.type", "hardlink,copy"], root)
    add = _sh([str(BIN / "dvc"), "add", "-q", "data/raw"], root)
    md5sum = min(_sh(["bash", "-c", "find data/raw -type f -print0 | xargs -0 md5sum > /dev/null"], root)
                 for _ in range(max(2, repeat)))
    cache = root / ".cvrepro/snapshot-checks.tsv"
    caches = (cache, cache.with_name("snapshot-labels.json"))  # image checks, the label side

    def best(before_each=None) -> dict:
        """`repeat` fresh-process runs, `before_each` setting the caches up for each: the fastest time (the
        least disturbed by other load), the largest memory growth."""
        runs = []
        for _ in range(repeat):
            if before_each:
                before_each()
            runs.append(_snapshot_run(root, cache))
        assert len({r["snapshot_id"] for r in runs}) == 1
        return {**min(runs, key=lambda r: r["seconds"]), "rss_kb": max(r["rss_kb"] for r in runs)}

    def no_cache() -> None:
        for c in caches:
            c.unlink(missing_ok=True)

    first = best(no_cache)
    again = best()  # nothing changed
    for i in rng.choice(n, max(1, n // 100), replace=False):  # 1% edited, same size in pixels
        path = root / "data/raw" / images[int(i)]["file_name"]
        path.unlink()  # a hard link into DVC's cache (read-only): replace the file, never write through it
        path.write_bytes(_unique(pool[(int(i) + 1) % len(pool)], n + int(i)))
    add2 = _sh([str(BIN / "dvc"), "add", "-q", "data/raw"], root)
    kept = [c.read_bytes() for c in caches]  # the caches as the last snapshot left them, for every repetition

    def as_before_the_edit() -> None:
        for c, data in zip(caches, kept):
            c.write_bytes(data)

    incremental = best(as_before_the_edit)
    full = best(no_cache)  # the same edited data, no cache: what incremental saves
    assert incremental["snapshot_id"] == full["snapshot_id"] != first["snapshot_id"], "incremental != full"
    assert first["snapshot_id"] == again["snapshot_id"]
    shutil.rmtree(root)
    return {"images": n, "size": f"{size[0]}x{size[1]}", "grain": grain, "repeat": repeat,
            "data_mb": round(sum(len(p) for p in pool) / len(pool) * n / 1e6), "generate_s": round(gen, 1), "git_dvc_init_s": round(setup, 2), "dvc_add_s": round(add, 1),
            "dvc_add_after_1pct_s": round(add2, 1), "md5sum_s": round(md5sum, 2),
            "first_s": round(first["seconds"], 2), "unchanged_s": round(again["seconds"], 2),
            "incremental_1pct_s": round(incremental["seconds"], 2), "full_s": round(full["seconds"], 2),
            "first_over_md5sum": round(first["seconds"] / md5sum, 2),
            "incremental_over_full": round(incremental["seconds"] / full["seconds"], 3),
            "bytes_per_image_first": round(first["rss_kb"] * 1024 / n),
            "bytes_per_image_incremental": round(incremental["rss_kb"] * 1024 / n)}


# --------------------------------------------------------------------------- preprocess and storage


def bench_preprocess(n: int, tmp: Path) -> dict:
    from cvrepro.dataset.processed import preprocess_workers, resize_all

    folder = tmp / "pre"
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(_jpeg(rng, (640, 480)))
        paths.append(str(path))

    def before() -> None:  # what SplitWriter.images did: serial, full decode
        for p in paths:
            with Image.open(p) as im:
                np.asarray(im.convert("RGB").resize((128, 128), Image.BILINEAR)).transpose(2, 0, 1)

    def now() -> None:
        for _ in resize_all(paths, 128, "bench"):
            pass

    times = {"before": [], "now": []}
    for _ in range(2):  # interleaved, best of 2
        for name, fn in (("before", before), ("now", now)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    cores = preprocess_workers()
    b, w = n / min(times["before"]), n / min(times["now"])
    shutil.rmtree(folder)
    return {"images": n, "cores": cores, "before_img_s": round(b, 1), "now_img_s": round(w, 1),
            "now_img_s_per_core": round(w / cores, 1), "speedup": round(w / b, 2)}


def bench_storage(tmp: Path) -> dict:
    """Bytes per image of the processed images as preprocess writes them (images.npy / N)."""
    from cvrepro.dataset.processed import SplitWriter

    root = tmp / "store"
    (root / "data/raw").mkdir(parents=True)
    rng = np.random.default_rng(2)
    paths, by_path = [], {}
    for i in range(20):
        (root / "data/raw" / f"{i}.jpg").write_bytes(_jpeg(rng, (640, 480)))
        paths.append(f"{i}.jpg")
        by_path[f"{i}.jpg"] = {"image_id": i, "width": 640, "height": 480}
    out = {}
    for size in (128, 640):
        for store in ("npy", "png", "jpeg", "webp"):
            folder = tmp / f"split{size}{store}"
            writer = SplitWriter(folder, len(paths), size, store=(store, 90))
            for _ in writer.images(paths, by_path, root):
                pass
            writer.close()
            data = folder / ("images.npy" if store == "npy" else "images.bin")
            per_image = data.stat().st_size / len(paths)
            out[f"{store}_{size}_bytes"] = round(per_image)
            out[f"{store}_{size}_of_raw"] = round(per_image / (3 * size * size), 3)
    return out


# --------------------------------------------------------------------------- evaluation


def _eval_data(n: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n + 1):
        images.append({"id": i, "width": 640, "height": 480, "weather": ["sun", "rain", "fog"][i % 3]})
        for _ in range(int(rng.integers(0, 6))):
            w, h = (float(v) for v in rng.uniform(6, 300, 2))
            box = [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h]
            cat = int(rng.integers(1, 6))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box, "area": w * h,
                         "iscrowd": 0})
            if rng.random() < 0.85:
                j = rng.normal(0, 0.1, 4) * [w, h, w, h]
                dets.append({"image_id": i, "category_id": cat, "score": float(rng.random()),
                             "bbox": [box[0] + j[0], box[1] + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]})
        for _ in range(int(rng.integers(0, 4))):
            dets.append({"image_id": i, "category_id": int(rng.integers(1, 6)), "score": float(rng.random()),
                         "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), 50.0, 40.0]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 6)]}
    return gt, dets


def _pycocotools_before(gt: dict, dets: list[dict], ids: list[int], slices: dict) -> dict:
    """Evaluation as it ran before: pycocotools on a deep copy for the split, then again per slice value."""
    import contextlib

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def one(img_ids):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return [None if s < 0 else round(float(s), 4) for s in ev.stats[:3]]

    out = {"split": one(ids)}
    for value, members in slices.items():
        out[value] = one(sorted(set(ids) & set(members)))
    return out


def bench_evaluate(n: int) -> dict:
    from cvrepro.learning.coco_metrics import slice_ids
    from cvrepro.tasks.detection import split_metrics

    gt, dets = _eval_data(n)
    ids = [img["id"] for img in gt["images"]]
    slices = slice_ids(gt, "weather")
    start = time.perf_counter()
    before = _pycocotools_before(gt, dets, ids, slices)
    t_before = time.perf_counter() - start
    start = time.perf_counter()
    now, _ = split_metrics(gt, dets, ids, {}, {"weather": slices})
    t_now = time.perf_counter() - start
    got = {"split": [now[k] for k in ("AP", "AP50", "AP75")],
           **{v: [now["weather"][v][k] for k in ("AP", "AP50", "AP75")] for v in slices}}
    if got != before:
        raise SystemExit(f"FAIL: metrics differ: before {before}, now {got}")
    return {"images": n, "detections": len(dets), "slice_values": len(slices), "pycocotools_before_s": round(t_before, 2),
            "now_s": round(t_now, 2), "speedup": round(t_before / t_now, 2), "metrics_equal": True}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--snapshot-child":
        _snapshot_child(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, nargs="+", default=[20000])
    ap.add_argument("--snapshot-size", default="160x120", help="WxH of the snapshot's JPEGs")
    ap.add_argument("--snapshot-grain", type=float, default=0.0,
                    help="noise in the snapshot's JPEGs (0: smooth; 12: 83 KB at 640x480, like photos)")
    ap.add_argument("--preprocess-images", type=int, default=1000)
    ap.add_argument("--eval-images", type=int, default=5000)
    ap.add_argument("--skip", default="")
    ap.add_argument("--repeat", type=int, default=3, help="snapshot runs per measurement (fastest kept)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    result = {"machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                          "python": platform.python_version(), "load_avg": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        tmp = Path(tmp)
        if "evaluate" not in skip:
            result["evaluate"] = bench_evaluate(args.eval_images)
            _show("evaluate", result["evaluate"], args.json)
        if "storage" not in skip:
            result["storage"] = bench_storage(tmp)
            _show("storage", result["storage"], args.json)
        if "preprocess" not in skip:
            result["preprocess"] = bench_preprocess(args.preprocess_images, tmp)
            _show("preprocess", result["preprocess"], args.json)
        if "snapshot" not in skip:
            size = tuple(int(v) for v in args.snapshot_size.split("x"))
            result["snapshot"] = [bench_snapshot(n, tmp, size=size, repeat=args.repeat, grain=args.snapshot_grain) for n in args.images]
            for r in result["snapshot"]:
                _show(f"snapshot {r['images']}", r, args.json)
    result["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(result))
    return 0


def _show(name: str, figures: dict, quiet: bool) -> None:
    if not quiet:
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
