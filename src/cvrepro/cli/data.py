"""Commands on the dataset: import and export in other formats, label corrections."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvrepro.config.params import INVALID, INVALID_MODES
from cvrepro.core.paths import ANNOTATIONS
from cvrepro.formats.registry import format_names

VOC_COORDS = ("plain", "devkit")  # formats.voc.COORDS
BAD_FILE_MODES = ("fail", "drop")  # formats.common.BAD_FILE_MODES
UNLABELLED_MODES = ("negative", "drop", "fail")  # formats.common.UNLABELLED_MODES
SPLIT_MODES = ("auto", "project", "subsets", "none")  # formats.splits.MODES


def _print_summary(s: dict) -> None:
    actions = ", ".join(f"{a} {n}" for a, n in s["actions"].items() if n)
    print(f"{s['corrections']} corrections from {s['csv']} ({actions}) to {s['labels']} ({s['task']})")
    print(f"  images changed: {len(s['images_changed'])}")
    changed = [f"{name} {c['before']} -> {c['after']} ({c['delta']:+d})" for name, c in s["per_class"].items()
               if c["delta"]]
    print(f"  per class: {', '.join(changed) if changed else 'no count changed'}")
    if s["added_ids"]:
        print(f"  new annotation ids: {', '.join(map(str, s['added_ids']))}")
    if not s["written"]:
        print("dry run: every row checks out; nothing written")
        return
    print(f"wrote {s['labels']}\nnext:")
    for step in s["next_steps"]:
        print(f"  {step}")


def _labels_task(name: str | None, annotations: Path):
    """The task whose corrections apply: --task, else params.yaml's, else what the labels file holds."""
    from cvrepro import tasks
    from cvrepro.core.paths import PARAMS

    if name:
        return tasks.get(name, "task")
    if PARAMS.exists():
        from cvrepro.config.typed import load

        return tasks.of_params(load())
    from cvrepro.core.fileio import read_json

    return tasks.of_labels(read_json(annotations))


def cmd_labels_apply(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing
    from cvrepro.dataset.corrections import run

    with changing(Path("."), "labels apply"):
        summary = run(Path(args.csv), Path(args.annotations), dry_run=args.dry_run,
                      task=_labels_task(args.task, Path(args.annotations)))
    if args.json:
        print(json.dumps(summary, sort_keys=True, indent=2))
    else:
        _print_summary(summary)
    return 0


def _add_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("labels", help="edit the labels: apply a CSV of corrections")
    labels_sub = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    a = labels_sub.add_parser("apply", help="apply label corrections from a CSV (all rows checked first; "
                                            "see docs/labels.md)",
                               description="Apply label corrections from a CSV. Every row is checked first: one bad "
                                           "row rejects the file and nothing is written. Format: docs/labels.md.")
    a.add_argument("csv", help="CSV with header image,annotation_id,action,category,x,y,w,h")
    a.add_argument("--annotations", default=str(ANNOTATIONS), help=f"labels file to correct (default: {ANNOTATIONS})")
    a.add_argument("--task", metavar="TASK",
                   help="what the labels are (default: `task` in params.yaml, else inferred from the file)")
    a.add_argument("--dry-run", action="store_true", help="check and summarise; write nothing")
    a.add_argument("--json", action="store_true", help="print the summary as JSON")
    a.set_defaults(func=cmd_labels_apply)


def _format_and_src(args: argparse.Namespace) -> tuple[str | None, str]:
    """`import SRC` (the format detected) or `import FORMAT SRC` (forced, the form before detection)."""
    from cvrepro.core.fileio import CvreproError

    if args.src is None:
        return None, args.first
    if args.first not in format_names():
        raise CvreproError(f"format {args.first!r} is unknown; choose one of {', '.join(format_names())} "
                           "(or give only SRC to detect it)")
    return args.first, args.src


def _print_import_notes(summary: dict) -> None:
    """What the import decided on its own, on stderr (stdout is the JSON summary; `detected:` came first)."""
    invalid, files = summary["invalid"], summary["bad_files"]
    if invalid["dropped"] or invalid["clipped"]:
        print(f"--invalid {invalid['mode']}: {invalid['dropped']} boxes dropped, {invalid['clipped']} clipped; "
              f"each is listed in {summary['report']}", file=sys.stderr)
    if files["dropped"]:
        print(f"--bad-files drop: {files['dropped']} files dropped; each is listed in {summary['report']}",
              file=sys.stderr)
    unlabelled = files["unlabelled"]
    if unlabelled["negatives"]:
        print(f"--unlabelled negative: {unlabelled['negatives']} images without annotations kept as negatives "
              "(images without objects)", file=sys.stderr)
    if unlabelled["dropped"]:
        print(f"--unlabelled drop: {unlabelled['dropped']} images without annotations dropped; each is listed in "
              f"{summary['report']}", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing
    from cvrepro.formats.transfer import import_dataset

    fmt, src = _format_and_src(args)
    with changing(Path(args.root), f"import {fmt}" if fmt else "import"):
        summary = import_dataset(fmt, Path(src), root=Path(args.root), force=args.force,
                                 dvc_add=not args.no_dvc_add,
                                 annotations=Path(args.annotations) if args.annotations else None,
                                 invalid=args.invalid, voc_coords=args.voc_coords, name=args.name,
                                 select=not args.no_select, bad_files=args.bad_files, unlabelled=args.unlabelled,
                                 log=lambda line: print(line, file=sys.stderr, flush=True))
        # The dataset is written, selected (conf/) and dvc-added; still under the repository lock.
        if summary.get("config"):  # selected: defaults chosen from its sizes, conf/fingerprint/<name>.yaml
            from cvrepro.tasks.defaults import write_dataset_defaults

            chosen = write_dataset_defaults(Path(args.root), Path(summary["config"]["dataset_option"]).stem)
            summary["defaults"] = {"option": chosen["option"], **chosen["chosen"]}
    print(json.dumps(summary, sort_keys=True, indent=2 if args.json else None))
    _print_import_notes(summary)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cvrepro.formats.transfer import export_dataset

    options = {"voc_coords": args.voc_coords} if args.format == "voc" else {}
    summary = export_dataset(args.format, Path(args.dest), root=Path(args.root), rev=args.rev, splits=args.splits,
                             **options)
    print(json.dumps(summary, sort_keys=True, indent=2 if args.json else None))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a COCO/YOLO/VOC/LabelImg/mask-folder/ImageFolder dataset into "
                                      "data/raw + data/labels and dvc add them",
                       usage="cvrepro import [FORMAT] SRC [options]",
                       description="Convert a dataset into data/raw + data/labels. The format and layout are "
                                   "detected from SRC (and printed); name FORMAT to force one.")
    p.add_argument("first", metavar="[FORMAT]", help=f"force the format: {', '.join(format_names())} "
                                                      "(default: detected from SRC)")
    p.add_argument("src", metavar="SRC", nargs="?", help="the source dataset folder (layouts: docs/import-export.md)")
    p.add_argument("--annotations", metavar="FILE", help="coco: the annotations JSON (default SRC/annotations.json)")
    p.add_argument("--force", action="store_true", help="replace data/raw and data/labels if they hold data")
    p.add_argument("--invalid", choices=INVALID_MODES, default=INVALID,
                   help="a zero-size or out-of-image box: fail (default), drop it, or clip it to the image; "
                        "each one dropped or clipped is listed in data/labels/import_report.csv")
    p.add_argument("--bad-files", choices=BAD_FILE_MODES, default="fail",
                   help="an unreadable or truncated image, an annotation file without an image, a second entry for "
                        "one file: fail (default, listing every one) or drop it and import the rest (each listed "
                        "in data/labels/import_report.csv)")
    p.add_argument("--unlabelled", choices=UNLABELLED_MODES, default="negative",
                   help="an image without annotations: keep it as a negative (default; detection only), drop it "
                        "(listed in the report) or fail")
    p.add_argument("--voc-coords", choices=VOC_COORDS, default="plain",
                   help="voc: plain numbers as CVAT/Datumaro/globox write them (default), or devkit 1-based pixels")
    p.add_argument("--name", help="the dataset option conf/dataset/NAME.yaml to write (default: SRC's folder name)")
    p.add_argument("--no-select", action="store_true",
                   help="do not write conf/dataset/NAME.yaml nor select it and its task in conf/config.yaml")
    p.add_argument("--no-dvc-add", action="store_true", help="do not run `dvc add data/raw data/labels`")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--json", action="store_true", help="pretty-print the summary")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write the dataset (workspace or a git revision) as COCO/YOLO/VOC/masks/"
                                      "ImageFolder")
    p.add_argument("--format", required=True, choices=format_names())
    p.add_argument("dest", metavar="DEST", help="output folder (must not exist or be empty)")
    p.add_argument("--rev", help="git tag or commit to export from, read through DVC without a checkout")
    p.add_argument("--splits", choices=SPLIT_MODES, default="auto",
                   help="which split each image goes in: project (data/splits/splits.json), subsets (the source's, "
                        "recorded at import), none (flat); auto (default): project if splits.json exists, else "
                        "subsets if any, else none")
    p.add_argument("--voc-coords", choices=VOC_COORDS, default="plain",
                   help="voc: plain numbers as CVAT/Datumaro/globox read them (default), or devkit 1-based pixels")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--json", action="store_true", help="pretty-print the summary")
    p.set_defaults(func=cmd_export)
    _add_labels(sub)
