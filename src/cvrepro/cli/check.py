"""`cvrepro check`: the dataset health report (docs/check.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvrepro.config.params import POLICIES


def cmd_check(args: argparse.Namespace) -> int:
    from cvrepro.config.typed import load
    from cvrepro.core.paths import PARAMS
    from cvrepro.provenance import check

    root = Path(args.root)
    cfg = load(root / PARAMS)
    settings = check.settings(cfg, args.policy)
    manifest, index, splits = check.load_workspace(root, cfg)
    report = check.gather(manifest, index, splits, settings, root)
    if args.sheet:
        drawn = check.write_sheet(report, root, Path(args.sheet), manifest, index)
        print(f"wrote {args.sheet}: {drawn} cases" if drawn else f"{args.sheet}: not written, nothing to show",
              file=sys.stderr)
    print(json.dumps(report, sort_keys=True, indent=2) if args.json else check.render_text(report))
    return 1 if report["blocking"] and settings.policy == "strict" else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="dataset health: class balance, unlabelled images, box sizes, duplicates, "
                                     "leakage across splits, label conflicts",
                       description="Report the dataset's health from the manifest, the labels and the splits. "
                                   "Thresholds: the `check` params (conf/check/default.yaml). Exit 1 under policy "
                                   "strict when copies leak across splits or carry different labels.")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--sheet", metavar="FILE", help="also write a PNG sheet of the worst cases")
    p.add_argument("--policy", choices=POLICIES, help="override check.policy for this run")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.set_defaults(func=cmd_check)
