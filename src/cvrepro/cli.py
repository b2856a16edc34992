"""`cvrepro`: the commands DVC lacks, and the thin entry points of the pipeline stages.

Each stage command reads params.yaml and calls one pure function; dvc.yaml runs them.
Heavy imports (torch) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import labels, reproduce, rollback
from .io import CvreproError


def _stage(module: str, func: str = "run"):
    def command(args: argparse.Namespace) -> int:
        import importlib

        from .params import load_params

        result = getattr(importlib.import_module(f"cvrepro.stages.{module}"), func)(load_params())
        if args.json:
            print(json.dumps(result, sort_keys=True, indent=2, default=str))
        return 0

    return command


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import generate_demo

    stats = generate_demo(Path(args.root), seed=args.seed, n_images=args.images, force=args.force)
    print(json.dumps(stats, sort_keys=True, indent=None if not args.json else 2))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from . import compose

    if args.check:
        diff = compose.check(Path(args.root))
        for key, old, new in diff:
            print(f"{key}: params.yaml has {old!r}, conf/ composes {new!r}")
        if diff:
            print("params.yaml differs from the composition of conf/; run `cvrepro compose --force`", file=sys.stderr)
            return 1
        print("params.yaml equals the composition of conf/")
        return 0
    compose.write_params(Path(args.root), overrides=args.overrides, force=args.force)
    return 0


def cmd_config_id(args: argparse.Namespace) -> int:
    from .params import config_id, load_params

    print(config_id(load_params()))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from . import release

    fn = release.release_dataset if args.kind == "dataset" else release.release_model
    record = fn(Path(args.root), version=args.version, level=args.bump, notes=args.notes or "", remote=args.remote)
    if args.json:
        print(json.dumps(record, sort_keys=True, indent=2))
    else:
        print(f"released {record['version']} ({record['bump']}); `git push --follow-tags` to share it")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from . import registry

    rows = registry.entries(Path(args.root))
    print(json.dumps(rows, sort_keys=True, indent=2) if args.json else registry.format_table(rows))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from . import datadiff

    root = Path(args.root)
    if args.a.startswith("v") and args.b.startswith("v"):
        from .triage import format_triage, triage

        result = triage(root, args.a, args.b)
        print(json.dumps(result, sort_keys=True, indent=2) if args.json else format_triage(result))
        return 0
    if not (args.a.startswith("DS-") or args.a == "workspace") or not (args.b.startswith("DS-") or args.b == "workspace"):
        raise CvreproError(f"diff compares two dataset versions (DS-x.y.z, or 'workspace') or two model releases "
                           f"(vX.Y.Z); got {args.a} and {args.b}")
    diff = datadiff.dataset_diff(datadiff.load_state(root, args.a), datadiff.load_state(root, args.b))
    print(json.dumps(diff, sort_keys=True, indent=2) if args.json else datadiff.format_diff(diff))
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    from .preflight import format_rows, preflight

    rows = preflight(Path(args.root), version=args.version)
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvrepro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="lay down the generated demo dataset in data/raw and data/labels: scenes with "
                       "boxes and masks, and a classification variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--force", action="store_true", help="replace an existing dataset")
    p.add_argument("--json", action="store_true", help="pretty-print the statistics")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compose", help="compose conf/ with Hydra into params.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.lr=0.02 model=ssdlite")
    p.add_argument("--root", default=".")
    p.add_argument("--force", action="store_true", help="overwrite params.yaml even if it holds an override")
    p.add_argument("--check", action="store_true", help="exit 1 if params.yaml differs from the composition")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("config-id", help="print the config ID of params.yaml (experiment name + hash)")
    p.set_defaults(func=cmd_config_id)

    p = sub.add_parser("release", help="release the dataset (DS-x.y.z) or the trained model (vX.Y.Z): "
                       "record, commit, annotated tag, dvc push")
    p.add_argument("kind", choices=["dataset", "model"])
    p.add_argument("--version", help="the version to make (default: computed from what changed)")
    p.add_argument("--bump", choices=["major", "minor", "patch"], help="bump the newest version by this level")
    p.add_argument("--notes", help="release notes; required for a larger bump than the change needs")
    p.add_argument("--remote", help="DVC remote to push to (default: the default remote)")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the release record")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("preflight", help="check that code, data and config are pinned (exit 1 if not)")
    p.add_argument("--version", help="the model version to be produced, checked to be free")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_preflight)

    p = sub.add_parser("ls", help="the registry: every dataset and model version with its facts")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("diff", help="DS-A DS-B: images, labels, classes, splits; vA vB: code, data, params "
                       "and metrics (regressions first)")
    p.add_argument("a", help="DS-x.y.z or vX.Y.Z")
    p.add_argument("b", nargs="?", default="workspace", help="DS-x.y.z or 'workspace' (default), or vX.Y.Z")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="the full diff, every path")
    p.set_defaults(func=cmd_diff)

    labels.add_commands(sub)
    reproduce.add_commands(sub)
    rollback.add_commands(sub)

    for name, module, func, text in [
        ("snapshot", "snapshot", "run", "validate the annotations and write data/snapshot/manifest.json"),
        ("split", "split", "run", "assign images to train/val/test by seeded hash"),
        ("preprocess", "preprocess", "run", "resize images into per-split arrays"),
        ("train", "train", "train", "train the model chosen in params.yaml (detector, segmenter or classifier)"),
        ("evaluate", "evaluate", "run", "metrics per task, plots, prediction grid and the lineage record"),
    ]:
        p = sub.add_parser(name, help=f"stage: {text}")
        p.add_argument("--json", action="store_true", help="print the stage's result as JSON")
        p.set_defaults(func=_stage(module, func))

    from .formats import add_commands as add_format_commands  # import, export

    add_format_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CvreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
