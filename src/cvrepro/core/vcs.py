"""Thin wrappers over the real `git` and `dvc` command lines, and semantic versions.

Releases drive git and DVC exactly as a user would from the shell, so what a
release does can be replayed and checked by hand. Failures become CvreproError
with the command and its message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cvrepro.core.fileio import CvreproError

BUMPS = ("patch", "minor", "major")  # in increasing order of impact
_VERSION = re.compile(r"^(DS-|v)(\d+)\.(\d+)\.(\d+)$")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_DIR") and k != "GIT_WORK_TREE"}
    env["LC_ALL"] = "C"
    return env


def run_git(root: Path, *args: str, input: str | bytes | None = None, text: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess | None:
    """The one place git runs: in `root`, captured, C locale; None if git cannot run or hangs past `timeout`."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=text, env=_env(),
                              input=input, check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git(root: Path, *args: str, check: bool = True, input: str | None = None) -> str:
    """Run git in `root`; return stdout (stripped). CvreproError if it fails and `check`."""
    res = run_git(root, *args, input=input)
    if res is None:
        raise CvreproError(f"cannot run git {' '.join(args)} (is git installed?)")
    if check and res.returncode != 0:
        raise CvreproError(f"git {' '.join(args)} failed: {(res.stderr or res.stdout).strip()}")
    return res.stdout.rstrip() if res.returncode == 0 else ""  # rstrip: porcelain lines start with a space


def git_bytes(root: Path, rev: str, path: str) -> bytes | None:
    """The bytes of a git-tracked `path` at `rev`, or None if it is not there."""
    res = run_git(root, "show", f"{rev}:{path}", text=False)
    return res.stdout if res is not None and res.returncode == 0 else None


def git_blobs(root: Path, specs: list[str]) -> list[bytes | None]:
    """The bytes of many `rev:path` specs in one `git cat-file --batch` (None where missing): reading a
    hundred releases' records one `git show` each would start a hundred processes."""
    if not specs:
        return []
    res = run_git(root, "cat-file", "--batch", input=("\n".join(specs) + "\n").encode(), text=False)
    if res is None or res.returncode != 0:
        raise CvreproError(f"git cat-file --batch failed in {root}")
    out, pos, blobs = res.stdout, 0, []
    for _ in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<spec> missing" / "ambiguous"
            blobs.append(None)
            continue
        size = int(header[2])
        blobs.append(out[pos : pos + size] if header[1] == b"blob" else None)
        pos += size + 1
    return blobs


def git_state(root: Path, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """``{"commit": HEAD sha or None, "dirty": bool or None}`` for the work tree holding `root`.

    Outside a git work tree (or without git) both are None. In a repository with no commit
    yet, commit is None and dirty says whether anything is staged, modified or untracked.
    Dirty counts modified, staged and untracked files that git does not ignore; `exclude`
    names paths (relative to `root`, git pathspecs) to leave out of that check, e.g. files
    the pipeline itself rewrites during a run such as ``dvc.lock``.
    """
    root = Path(root)
    inside = run_git(root, "rev-parse", "--is-inside-work-tree", timeout=60)
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
        return {"commit": None, "dirty": None}
    head = run_git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", timeout=60)
    commit = head.stdout.strip() if head is not None and head.returncode == 0 and head.stdout.strip() else None
    exclude = list(exclude)
    pathspec = (["--", ":/"] + [f":(exclude){p}" for p in exclude]) if exclude else []
    status = run_git(root, "status", "--porcelain", "--untracked-files=normal", *pathspec, timeout=60)
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"commit": commit, "dirty": dirty}


def dvc(root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        stream: bool = False) -> subprocess.CompletedProcess:
    """Run the dvc of this interpreter's environment in `root` (`env`: extra variables).
    `stream`: DVC writes to the terminal (its progress bars for long transfers) instead of being captured."""
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=not stream, text=True,
                         env={**_env(), **(env or {})}, check=False, stdout=sys.stderr if stream else None)
    if check and res.returncode != 0:
        said = (res.stderr or res.stdout or "").strip() if not stream else "see DVC's message above"
        raise CvreproError(f"dvc {' '.join(args)} failed (exit {res.returncode}): {said}")
    return res


def dvc_watched(root: Path, *args: str, env: dict[str, str] | None = None, stalled=None,
                poll: float = 1.0) -> int:
    """Run dvc in `root` writing to the terminal (its progress bars); every `poll` s ask `stalled()`
    and, when it returns a message, stop dvc and raise CvreproError with it. Returns dvc's exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=root, stdout=sys.stderr,
                            env={**_env(), **(env or {})})
    try:
        while True:
            try:
                return proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                said = stalled() if stalled else None
                if said:
                    raise CvreproError(said)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def dvc_changed(root: Path, *targets: str) -> list[str]:
    """What `dvc status --json` reports as changed (stage or .dvc names), sorted; CvreproError if it fails."""
    res = dvc(root, "status", "--json", *targets, check=False)
    try:
        status = json.loads(res.stdout or "null")
    except json.JSONDecodeError:
        status = None
    if res.returncode != 0 or status is None:
        raise CvreproError(f"dvc status failed: {(res.stderr or res.stdout).strip()}")
    return sorted(status)


def dirty_paths(root: Path) -> list[str]:
    """Modified, staged and untracked (not ignored) paths: what a release must not leave out."""
    out = git(root, "status", "--porcelain", "--untracked-files=normal")
    return [line[3:] for line in out.splitlines() if line.strip()]


def head_commit(root: Path) -> str:
    commit = git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if not commit:
        raise CvreproError("this git repository has no commit yet: commit the project first")
    return commit


def tag_exists(root: Path, tag: str) -> bool:
    return bool(git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False))


# --------------------------------------------------------------------------- versions


def parse_version(text: str, prefix: str) -> tuple[int, int, int]:
    """`DS-1.2.3` (prefix "DS-") or `v1.2.3` (prefix "v") -> (1, 2, 3); also accepts a bare 1.2.3."""
    if re.fullmatch(r"\d+\.\d+\.\d+", text):
        text = prefix + text
    m = _VERSION.match(text)
    if not m or m.group(1) != prefix:
        raise CvreproError(f"version '{text}' is not {prefix}MAJOR.MINOR.PATCH")
    return int(m.group(2)), int(m.group(3)), int(m.group(4))


def format_version(prefix: str, v: tuple[int, int, int]) -> str:
    return f"{prefix}{v[0]}.{v[1]}.{v[2]}"


def bump(v: tuple[int, int, int], level: str) -> tuple[int, int, int]:
    if level == "major":
        return (v[0] + 1, 0, 0)
    if level == "minor":
        return (v[0], v[1] + 1, 0)
    if level == "patch":
        return (v[0], v[1], v[2] + 1)
    raise CvreproError(f"bump '{level}' is not one of {', '.join(BUMPS)}")


def bump_level(old: tuple[int, int, int], new: tuple[int, int, int]) -> str | None:
    """The level a step from `old` to `new` amounts to (None if `new` is not greater)."""
    if new <= old:
        return None
    if new[0] != old[0]:
        return "major"
    return "minor" if new[1] != old[1] else "patch"


def versions(root: Path, prefix: str) -> list[tuple[tuple[int, int, int], str]]:
    """Every tag `<prefix>X.Y.Z`, sorted by semantic version."""
    found = []
    for tag in git(root, "tag", "--list", f"{prefix}*", check=False).splitlines():  # outside git: none
        m = _VERSION.match(tag.strip())
        if m and m.group(1) == prefix:
            found.append(((int(m.group(2)), int(m.group(3)), int(m.group(4))), tag.strip()))
    return sorted(found)
