"""Commands of the pipeline: the stages dvc.yaml runs, compose, config-id and the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvrepro.core.fileio import CvreproError

STAGES = [  # (command, help): `cvrepro <stage>` runs cvrepro.stages.<stage>.run(params.yaml)
    ("snapshot", "validate the annotations and write data/snapshot/manifest.json"),
    ("split", "assign images to train/val/test by seeded hash"),
    ("preprocess", "resize images into per-split arrays"),
    ("train", "train the model chosen in params.yaml (detector, segmenter or classifier)"),
    ("evaluate", "metrics per task, plots, prediction grid and the lineage record"),
]


def cmd_stage(args: argparse.Namespace) -> int:
    import importlib

    from cvrepro.config.typed import load
    from cvrepro.learning.devices import pin_cpu_isa

    cfg = load()  # every stage command reads params.yaml typed: a bad key or value is refused here, in one line
    # Before the stage imports torch: the CPU kernels read their instruction-set pin when torch loads.
    pin_cpu_isa(cfg.train)
    try:
        stage = importlib.import_module(f"cvrepro.stages.{args.command}")
        result = stage.run(cfg)
    except BaseException:  # inside `dvc exp run`: params.yaml and dvc.lock back as they were, then the error
        from cvrepro.config.compose import undo_failed_experiment

        undo_failed_experiment(log=lambda line: print(line, file=sys.stderr))
        raise
    if args.json:
        print(json.dumps(result, sort_keys=True, indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing
    from cvrepro.dataset.demo import generate_demo

    with changing(Path(args.root), "demo"):
        stats = generate_demo(Path(args.root), seed=args.seed, n_images=args.images, force=args.force)
    print(json.dumps(stats, sort_keys=True, indent=None if not args.json else 2))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from cvrepro.config import compose

    if args.check:
        diff = compose.check(Path(args.root))
        for key, old, new in diff:
            print(f"{key}: params.yaml has {old!r}, conf/ composes {new!r}")
        if diff:
            print("params.yaml differs from the composition of conf/; run `cvrepro compose --force`", file=sys.stderr)
            return 1
        print("params.yaml equals the composition of conf/")
        return 0
    from cvrepro.core.lock import repo_lock

    with repo_lock(Path(args.root), "compose"):  # no repair here: compose is a pipeline stage
        try:
            compose.write_params(Path(args.root), overrides=args.overrides, force=args.force)
        except CvreproError:  # `dvc exp run -S key=bad`: params.yaml back to conf/'s composition, then the error
            compose.undo_failed_experiment(Path(args.root), log=lambda line: print(line, file=sys.stderr))
            raise
    return 0


def cmd_config_id(args: argparse.Namespace) -> int:
    from cvrepro.config.params import config_id
    from cvrepro.config.typed import load

    print(config_id(load()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
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

    for name, text in STAGES:
        p = sub.add_parser(name, help=f"stage: {text}")
        p.add_argument("--json", action="store_true", help="print the stage's result as JSON")
        p.set_defaults(func=cmd_stage)
