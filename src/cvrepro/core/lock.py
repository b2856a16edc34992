"""The repository lock: one command that changes the repository at a time.

Release, import, `labels apply`, rollback, compose and demo take it. It is an
advisory `flock` on `cvrepro.lock` in the git directory (shared by every worktree of
the repository, never tracked), so the kernel drops it when its holder dies, even by
kill -9: there is no stale lock to clean up. The holder writes who it is (command,
pid, start time) into the file; a second command waits up to CVREPRO_LOCK_WAIT
seconds (default 60), saying once whom it waits for, then refuses naming the holder.
A child process of the holder (a stage run by DVC, say) inherits the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from cvrepro.core.fileio import CvreproError
from cvrepro.core.vcs import run_git

WAIT_ENV = "CVREPRO_LOCK_WAIT"
HELD_ENV = "CVREPRO_LOCK_HELD"  # set while held: children of the holder do not wait for their parent
DEFAULT_WAIT = 60.0


def git_path(root: Path, name: str, common: bool = True) -> Path:
    """`name` inside the repository's git directory (common to all worktrees, or this worktree's own);
    outside git, `.cvrepro-<name>` in root."""
    res = run_git(root, "rev-parse", "--git-common-dir" if common else "--absolute-git-dir", timeout=60)
    if res is None or res.returncode != 0 or not res.stdout.strip():
        return Path(root).resolve() / f".cvrepro-{name}"
    return (Path(root) / res.stdout.strip()).resolve() / name


def lock_path(root: Path) -> Path:
    return git_path(root, "cvrepro.lock")


def describe_holder(path: Path) -> str:
    """'`release dataset` (pid 123, since 2026-...Z)' from the lock file, or a generic phrase."""
    try:
        h = json.loads(path.read_text() or "{}")
        return f"`cvrepro {h['command']}` (pid {h['pid']}, started {h['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another cvrepro command"


def _wait_seconds(wait: float | None) -> float:
    if wait is not None:
        return wait
    try:
        return float(os.environ.get(WAIT_ENV, DEFAULT_WAIT))
    except ValueError:
        raise CvreproError(f"{WAIT_ENV}={os.environ[WAIT_ENV]!r}: not a number of seconds") from None


def try_lock(path: Path) -> int | None:
    """An fd holding the lock at `path`, or None if someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


@contextlib.contextmanager
def repo_lock(root: Path, command: str, wait: float | None = None, log=None) -> Iterator[None]:
    """Hold the repository lock for the block; wait up to `wait` s (default CVREPRO_LOCK_WAIT) for it."""
    path = lock_path(root)
    if os.environ.get(HELD_ENV) == str(path):
        yield  # our parent holds it
        return
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    limit = _wait_seconds(wait)
    deadline, told = time.monotonic() + limit, False
    while (fd := try_lock(path)) is None:
        if time.monotonic() >= deadline:
            raise CvreproError(f"the repository is busy: {describe_holder(path)} is changing it; waited {limit:g} s "
                               f"(set {WAIT_ENV} to wait longer, or rerun when it has finished)")
        if not told:
            log(f"waiting for {describe_holder(path)} to finish (up to {limit:g} s)")
            told = True
        time.sleep(0.1)
    try:
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"command": command, "pid": os.getpid(), "started": started}).encode(), 0)
        os.environ[HELD_ENV] = str(path)
        yield
    finally:
        os.environ.pop(HELD_ENV, None)
        os.close(fd)  # closing the last descriptor releases the flock
