"""`cvrepro`: the commands DVC lacks, and the thin entry points of the pipeline stages.

One convention: every command is a `cmd_<name>(args) -> int` in one of the modules below,
registered by that module's `add_commands(sub)`; library code never parses arguments. Heavy
imports (torch, DVC) happen inside the command that needs them, so `cvrepro --help` is fast
and a stage's command runs only its stage's code.
"""

from __future__ import annotations

import argparse
import os
import sys

from cvrepro.cli import data, pipeline, releases
from cvrepro.core.fileio import CvreproError

GROUPS = (pipeline, data, releases)  # the order of `cvrepro --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvrepro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def threads_env() -> None:
    """OpenMP threads that sleep at barriers instead of spinning (OMP_WAIT_POLICY=PASSIVE) unless the user
    chose otherwise. Spinning threads fight any other busy process for the cores (a CI neighbour, a pod's CPU
    limit): on a busy 2-core machine 2 spinning threads took a median 15x the wall time of 2 sleeping ones
    and 11x their CPU time (benchmarks/bench_threads.py, benchmarks/README.md). The arithmetic, hence the weights, do not change. Set here, before any
    command imports torch, because OpenMP reads it once, when it starts."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    threads_env()
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
