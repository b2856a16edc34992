"""`cvrepro fingerprint`: the dataset's sizes, and the defaults chosen from them (docs/fingerprint.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from cvrepro.dataset.fingerprint import summary_lines
    from cvrepro.tasks.defaults import compute, write_dataset_defaults

    root = Path(args.root)
    if args.write:
        from cvrepro.cli.guard import changing

        with changing(root, "fingerprint --write"):
            summary = write_dataset_defaults(root, args.name, args.budget, select=True)
        name, fp, text = summary["dataset"], summary["fingerprint"], None
    else:
        name, fp, chosen, text = compute(root, args.name, args.budget)
        summary = {"dataset": name, "fingerprint": fp, "written": False,
                   "chosen": {g: {k: v for k, v, _ in chosen[g]} for g in ("preprocess", "model")}}
    if args.json:
        print(json.dumps(summary, sort_keys=True, indent=2))
        return 0
    print(f"dataset {name} ({fp['task']}):")
    print("\n".join(summary_lines(fp)))
    if text is not None:
        print(f"\ndefaults (write them with --write to conf/fingerprint/{name}.yaml):\n{text}", end="")
    else:
        print(f"\nwrote {summary['option']}; params.yaml recomposed")
        print((root / summary["option"]).read_text(), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fingerprint", help="measure the dataset (image and object sizes) and choose preprocess and "
                                           "model defaults from it")
    p.add_argument("--write", action="store_true",
                   help="write the defaults to conf/fingerprint/NAME.yaml (applied when the dataset is selected) "
                        "and recompose params.yaml")
    p.add_argument("--name", help="the dataset option (default: the one selected in conf/config.yaml)")
    p.add_argument("--budget", default="cpu",
                   help="cpu (default: a few thousand images in minutes on a laptop CPU; sides up to 320), gpu "
                        "(up to 1024), or a number of pixels an epoch (images x side x side)")
    p.add_argument("--root", default=".", help="project root (default: current directory)")
    p.add_argument("--json", action="store_true", help="print the fingerprint and the choices as JSON")
    p.set_defaults(func=cmd_fingerprint)
