"""The commands that change the repository run inside `changing(root, command)`: the repository
lock (core/lock.py), then the repair of whatever a killed command left (provenance/doctor.py),
each repair reported on stderr. Read-only commands call `repair_if_idle`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _report(done: list[dict]) -> list[dict]:
    for r in done:
        print(f"note: {r['message']}", file=sys.stderr, flush=True)
    return done


@contextlib.contextmanager
def changing(root: Path, command: str, repair: bool = True) -> Iterator[list[dict]]:
    """Hold the repository lock for the block; yields the repairs made first."""
    from cvrepro.core.lock import repo_lock

    with repo_lock(Path(root), command):
        if repair:
            from cvrepro.provenance.doctor import repair as fix

            yield _report(fix(Path(root)))
        else:
            yield []


def repair_if_idle(root: Path) -> list[dict]:
    """Repair what a killed command left, unless a command holds the lock now (then its journal is live)."""
    from cvrepro.core.lock import HELD_ENV, describe_holder, lock_path, try_lock

    path = lock_path(Path(root))
    if os.environ.get(HELD_ENV) == str(path):
        fd = None
    elif (fd := try_lock(path)) is None:
        from cvrepro.provenance import journal

        if journal.path(Path(root)).exists():
            print(f"note: {describe_holder(path)} is making a release right now", file=sys.stderr)
        return []
    try:
        from cvrepro.provenance.doctor import repair

        return _report(repair(Path(root)))
    finally:
        if fd is not None:
            os.close(fd)
