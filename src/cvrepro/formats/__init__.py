"""Importers and exporters: COCO, YOLO, Pascal VOC, mask folders, ImageFolder <-> data/raw + data/labels.

One module per format, each with `read(src) -> Dataset` and `write(dataset, dest)`;
`transfer` holds the drivers. Source layouts: docs/import-export.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMAT_NAMES = ["coco", "yolo", "voc", "masks", "imagefolder"]


def cmd_import(args: argparse.Namespace) -> int:
    from .transfer import import_dataset

    summary = import_dataset(args.format, Path(args.src), root=Path(args.root), force=args.force,
                             dvc_add=not args.no_dvc_add,
                             annotations=Path(args.annotations) if args.annotations else None)
    print(json.dumps(summary, sort_keys=True, indent=2 if args.json else None))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .transfer import export_dataset

    summary = export_dataset(args.format, Path(args.dest), root=Path(args.root), rev=args.rev)
    print(json.dumps(summary, sort_keys=True, indent=2 if args.json else None))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`cvrepro import` and `cvrepro export`."""
    p = sub.add_parser("import", help="convert a COCO/YOLO/VOC/mask-folder/ImageFolder dataset into data/raw + "
                                      "data/labels and dvc add them")
    p.add_argument("format", choices=FORMAT_NAMES)
    p.add_argument("src", metavar="SRC", help="the source dataset folder (layouts: docs/import-export.md)")
    p.add_argument("--annotations", metavar="FILE", help="coco: the annotations JSON (default SRC/annotations.json)")
    p.add_argument("--force", action="store_true", help="replace data/raw and data/labels if they hold data")
    p.add_argument("--no-dvc-add", action="store_true", help="do not run `dvc add data/raw data/labels`")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--json", action="store_true", help="pretty-print the summary")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write the dataset (workspace or a git revision) as COCO/YOLO/VOC/masks/"
                                      "ImageFolder")
    p.add_argument("--format", required=True, choices=FORMAT_NAMES)
    p.add_argument("dest", metavar="DEST", help="output folder (must not exist or be empty)")
    p.add_argument("--rev", help="git tag or commit to export from, read through DVC without a checkout")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--json", action="store_true", help="pretty-print the summary")
    p.set_defaults(func=cmd_export)
