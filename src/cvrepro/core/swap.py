"""A crash-safe swap of whole folders: new folders built beside their targets take their places so
that at every instant each target is whole (old or new), and a kill part way is settled by the next
command, never leaving a mix.

The swap is journaled in WORK/journal.json with every folder's inode: before every exchange is done
('swapping') a kill rolls back to the old set, after it ('swapped') the new set stays
(`settle_interrupted`). `cvrepro import` uses it for data/raw + data/labels (formats/transfer.py).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path

from cvrepro.core.faults import kill_point
from cvrepro.core.fileio import write_json

JOURNAL = "journal.json"
_EXCHANGE_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class SwapFailed(Exception):
    """An exchange failed (the OSError is the argument) and the old set is back in place."""


def exchange(a: Path, b: Path) -> None:
    """Swap folders a and b in one atomic step (Linux renameat2 RENAME_EXCHANGE), so b is never
    missing; where the file system cannot, three renames (the journal covers the gap)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        if fn(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
            return
        err = ctypes.get_errno()
        if err not in _EXCHANGE_UNSUPPORTED:
            raise OSError(err, os.strerror(err), str(b))
    parked = a.with_name(a.name + ".old")
    b.rename(parked)
    a.rename(b)
    parked.rename(a)


def _ino(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except FileNotFoundError:
        return None


def _put(target: Path, want: int | None, places: list[Path]) -> None:
    """Make `target` the folder whose inode is `want` (None: no folder), the other going to `places`."""
    if _ino(target) == want:
        return
    source = next((p for p in places if want is not None and _ino(p) == want), None)
    if source is not None and target.exists():
        exchange(source, target)
    elif source is not None:
        source.rename(target)
    else:
        target.rename(next(p for p in places if not p.exists()))


def settle(work: Path, state: dict, side: str) -> None:
    """Put the 'old' or 'new' folder of every pair in `state` (the journal) in place."""
    for pair in state["pairs"]:
        places = [work / pair["new"], work / f"{pair['new']}.old", work / f"{pair['new']}.spare"]
        _put(work.parent / pair["target"], pair[f"{side}_ino"], places)


def journal_step(work: Path) -> str | None:
    """The step the journal in `work` records ('swapping', 'swapped'), None without a readable one."""
    try:
        return json.loads((work / JOURNAL).read_text()).get("step")
    except (OSError, ValueError):
        return None


def swap_in(pairs: list[tuple[Path, Path]], work: Path, extra: dict | None = None, name: str = "swap") -> None:
    """Exchange each target folder with its new one (new folders inside `work`, targets beside `work`),
    journaled in work/journal.json with each folder's inode and `extra` (what the caller's recovery needs).
    A kill anywhere leaves a state `settle_interrupted` can tell apart and settle. An OSError here puts
    the old set back at once and raises SwapFailed. Kill points (core/faults.py): `{name}:swapped-{i}`."""
    state = {"pid": os.getpid(), "step": "swapping", **(extra or {}),
             "pairs": [{"new": new.name, "target": target.name, "new_ino": _ino(new), "old_ino": _ino(target)}
                       for new, target in pairs]}
    assert all(target.parent == work.parent for _, target in pairs)
    write_json(work / JOURNAL, state)
    try:
        for i, (new, target) in enumerate(pairs):
            exchange(new, target) if target.exists() else new.rename(target)
            kill_point(f"{name}:swapped-{i}")
    except OSError as e:
        settle(work, state, "old")  # if this fails too, the journal stays and the next command settles
        (work / JOURNAL).unlink()
        raise SwapFailed(e) from None
    write_json(work / JOURNAL, {**state, "step": "swapped"})


def settle_interrupted(work: Path) -> dict:
    """Settle the swap of a process that died (call under the repository lock): part way ('swapping'),
    the old set is put back; complete ('swapped'), the new set stays. Returns its journal ({} when it
    had none: the swap had not begun, nothing was moved); removing `work` is the caller's."""
    try:
        state = json.loads((work / JOURNAL).read_text())
    except (OSError, ValueError):
        return {}  # the journal is written before the first exchange
    if state.get("step") == "swapping":
        settle(work, state, "old")
    elif state.get("step") == "swapped":
        settle(work, state, "new")
    return state
