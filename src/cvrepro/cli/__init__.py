"""`cvrepro`: the commands DVC lacks, and the thin entry points of the pipeline stages.

One convention: every command is a `cmd_<name>(args) -> int` in one of the modules below,
registered by that module's `add_commands(sub)`; library code never parses arguments. Heavy
imports (torch, DVC) happen inside the command that needs them, so `cvrepro --help` is fast
and a stage's command runs only its stage's code.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from cvrepro.cli import check, data, fingerprint, label_issues, pipeline, predict, releases
from cvrepro.core.fileio import CvreproError

GROUPS = (pipeline, data, fingerprint, check, label_issues, releases, predict)  # the order of `cvrepro --help`
DEBUG_ENV = "CVREPRO_DEBUG"

_WHAT_TO_DO = {  # errno -> what the user can do about it
    errno.EACCES: "permission denied: check the owner and mode of the file and of its folder (ls -l)",
    errno.EPERM: "operation not permitted: check the owner and mode of the file and of its folder (ls -l)",
    errno.EROFS: "read-only file system: remount it writable or work on a writable copy",
    errno.ENOSPC: "no space left on the device: free some space (df -h) and rerun",
    errno.EDQUOT: "disk quota exceeded: free some space and rerun",
    errno.EFBIG: "file too large for the file-size limit: raise it (ulimit -f) or free space, and rerun",
    errno.ENOENT: "not found",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "a part of the path is not a directory",
}


def os_error_line(e: OSError) -> str:
    """One line for an error of the operating system: the path, what happened, what to do."""
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None) or "(no path given)"
    said = _WHAT_TO_DO.get(e.errno, e.strerror or str(e))
    return f"{where}: {said} (nothing was changed by the failed step)"


def unicode_error_line(e: UnicodeError) -> str:
    return (f"a text file is not UTF-8 ({e}): save it as UTF-8 and rerun "
            f"(run with --debug or {DEBUG_ENV}=1 to see where it was read)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvrepro", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")
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
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except CvreproError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the operating system said no: a user's problem to fix, not a bug
        if debug:
            raise
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except UnicodeError as e:
        if debug:
            raise
        print(f"error: {unicode_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
