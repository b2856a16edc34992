"""The release journal: what a release in progress has done, so a killed one can be settled.

A release (provenance/release.py) writes `cvrepro-release.json` in this worktree's git
directory before it pushes, notes its commit once made, and removes the file when the
tag exists. The next command that takes the repository lock (release, import, `labels
apply`, rollback, `ls`, `doctor`) calls `recover`, which settles a journal left by a
killed release:

- its commit exists (killed after commit, before or after the tag): the release is
  completed, the annotated tag made on that commit with the committed notes;
- no commit: it is rolled back, the record files it wrote (only if they still hold the
  bytes it wrote) unstaged and removed. Data it pushed stays in the remote: the rerun
  reuses it rather than uploading again.

So `cvrepro ls` (which lists tags) and the branch never disagree after the next command.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from cvrepro.core.fileio import CvreproError, read_json, sha256_file, write_json
from cvrepro.core.lock import git_path
from cvrepro.core.vcs import git, git_bytes, run_git, tag_exists
from cvrepro.provenance import gtotags, registry

NAME = "cvrepro-release.json"


def path(root: Path) -> Path:
    return git_path(root, NAME, common=False)


def begin(root: Path, **facts) -> None:
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(path(root), {"pid": os.getpid(), "started": started, "commit": None, **facts})


def note(root: Path, **facts) -> None:
    write_json(path(root), {**read_json(path(root)), **facts})


def clear(root: Path) -> None:
    path(root).unlink(missing_ok=True)


def remove_files(root: Path, files: dict[str, str]) -> None:
    """Unstage and remove the record files a release wrote, if they still hold what it wrote."""
    for rel, digest in files.items():
        p = Path(root) / rel
        if p.is_file() and sha256_file(p) == digest:
            git(root, "reset", "-q", "--", rel, check=False)
            p.unlink()


def _commit_of(root: Path, j: dict) -> str | None:
    """The release commit: noted in the journal, else (killed before the note) the commit after
    the journal's starting HEAD that added the record."""
    if j.get("commit"):
        res = run_git(root, "cat-file", "-e", f"{j['commit']}^{{commit}}")
        if res is not None and res.returncode == 0:
            return j["commit"]
    record = registry.record_path(j["tag"]).as_posix()
    found = git(root, "log", "--format=%H", "--diff-filter=A", f"{j['head']}..HEAD", "--", record, check=False)
    return found.splitlines()[-1] if found else None


def recover(root: Path) -> dict | None:
    """Settle a release journal left by a killed release; {"tag", "action", "message"} or None."""
    p = path(root)
    if not p.exists():
        return None
    try:
        j = read_json(p)
        tag, files = j["tag"], j["files"]
    except (CvreproError, KeyError, TypeError):
        p.unlink()
        return {"tag": None, "action": "discarded", "message": f"discarded an unreadable release journal {p}"}
    who = f"the release of {tag} interrupted at {j.get('started')} (pid {j.get('pid')})"
    commit = _commit_of(root, j)
    if commit is None:
        remove_files(root, files)
        clear(root)
        return {"tag": tag, "action": "rolled back",
                "message": f"{who} was rolled back: it had made no commit (data it pushed stays in the remote)"}
    if tag_exists(root, tag):
        tagged = git(root, "rev-parse", f"{tag}^{{commit}}")
        if tagged != commit:
            clear(root)
            raise CvreproError(f"{who}: its commit {commit[:9]} exists but the tag {tag} names {tagged[:9]}; "
                               "check both by hand (tags are never moved)")
        gtotags.tag_release(root, tag, commit)  # killed between our tag and GTO's; the journal stays until made
        clear(root)
        return {"tag": tag, "action": "completed", "message": f"{who} had finished; journal removed"}
    notes = git_bytes(root, commit, registry.record_path(tag).with_suffix(".md").as_posix()) or tag.encode()
    git(root, "tag", "-a", tag, "--cleanup=verbatim", "-F", "-", commit, input=notes.decode())
    gtotags.tag_release(root, tag, commit)
    clear(root)
    return {"tag": tag, "action": "completed",
            "message": f"{who} was completed: tagged its commit {commit[:9]} as {tag}"}
