"""How fast `cvrepro predict` goes through a folder, against calling the Python predictor once per image.

    python benchmarks/bench_predict.py MODEL IMAGES_DIR [--threads 2] [--repeat 2] [--json]

MODEL as `cvrepro predict` takes it (a model folder such as models/, a release tag, a bundle folder). Times,
interleaved, best of --repeat, in this process (imports and model loading excluded):
  (a) baseline: `predictor(path)` for each image, the loop a user of `cvrepro.load_model` writes;
  (b) `predict_folder` with `--formats results,yolo-txt`, torch, batch size 1 and 8;
  (c) the same with the onnx runtime, batch size 8.
Prints seconds, images/s and each one's ratio to (a).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cvrepro.formats.common import find_images
from cvrepro.provenance.predict import load, predict_folder  # the venv's cvrepro (`pip install -e .`)


def per_image(predictor, images: list[Path]) -> None:
    for path in images:
        predictor(path)


def folder(predictor, about: dict, images_dir: Path, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        predict_folder(predictor, about, images_dir, Path(tmp) / "out", "results,yolo-txt", batch_size=batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("images", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    paths = list(find_images(args.images).values())
    torch_model, about = load(args.model, "torch", "cpu", args.threads)
    onnx_model, onnx_about = load(args.model, "onnx", "cpu", args.threads)
    runs = {
        "per_image_torch": lambda: per_image(torch_model, paths),
        "folder_torch_b1": lambda: folder(torch_model, about, args.images, 1),
        "folder_torch_b8": lambda: folder(torch_model, about, args.images, 8),
        "folder_onnx_b8": lambda: folder(onnx_model, onnx_about, args.images, 8),
    }
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    base = best["per_image_torch"]
    out = {"images": len(paths), "threads": args.threads,
           **{name: {"s": round(s, 3), "images_per_s": round(len(paths) / s, 1), "ratio": round(s / base, 3)}
              for name, s in best.items()}}
    if args.json:
        print(json.dumps(out))
        return
    for name, v in best.items():
        print(f"{name:18s} {v:7.2f} s  {len(paths) / v:6.1f} images/s  {v / base:5.2f}x the per-image loop")


if __name__ == "__main__":
    main()
