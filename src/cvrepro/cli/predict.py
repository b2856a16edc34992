"""`cvrepro predict`: a model (release tag, models/ or a release bundle) on a folder of images
(provenance/predict.py; docs/predict.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RUNTIMES = ("torch", "onnx")  # provenance.predict.RUNTIMES, without importing it for --help


def cmd_predict(args: argparse.Namespace) -> int:
    from cvrepro.provenance.predict import load, predict_folder

    predictor, about = load(args.model, args.runtime, args.device, args.threads, Path(args.root))
    summary = predict_folder(predictor, about, Path(args.images), Path(args.out), args.formats, args.batch_size,
                             args.score_thresh, args.force)
    if summary["skipped"]:
        print(f"{summary['skipped']} of {summary['images']} images skipped (unreadable): see "
              f"{Path(args.out) / 'predict_report.csv'}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True, indent=2 if args.json else None))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict a folder of images with a model: COCO results, YOLO txt, and "
                                       "COCO/VOC/YOLO pre-annotations for CVAT and Label Studio")
    p.add_argument("model", metavar="MODEL", help="a model release tag (vX.Y.Z), a model folder (models/) or a "
                                                  "release bundle folder (models/releases/vX.Y.Z/)")
    p.add_argument("images", metavar="IMAGES_DIR", help="a folder of images (any depth; hidden files skipped)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    p.add_argument("--formats", metavar="LIST",
                   help="comma-separated outputs (default: all of the task's): detection results, yolo-txt, coco, "
                        "voc, yolo; classification results, csv, imagefolder")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="torch or onnx (default: torch; onnx for a bundle folder, which holds only the ONNX model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="detections below this score are left out (default 0.3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: the runtime's own choice)")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds files")
    p.add_argument("--root", default=".", help="the project whose release tags MODEL names (default: .)")
    p.add_argument("--json", action="store_true", help="pretty-print the summary")
    p.set_defaults(func=cmd_predict)
