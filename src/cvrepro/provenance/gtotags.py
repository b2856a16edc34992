"""DVC's model registry sees our releases: `dvc.yaml` declares the artifacts (`artifacts:`, one of `type: model`
and one of `type: dataset`), and each release also gets GTO's annotated tag `NAME@vX.Y.Z` on the release commit
(`model@v0.2.0` beside `v0.2.0`, `dataset@v0.2.1` beside `DS-0.2.1`). `dvc artifacts get REPO NAME --rev vX.Y.Z`,
`gto show` and Studio read those; GTO ignores our own `vX.Y.Z` and `DS-X.Y.Z` tags, and `cvrepro ls` ignores
GTO's. An artifact that `dvc.yaml` does not declare gets no GTO tag (the release itself is unaffected).
Like our own tags, a GTO tag is never moved: one that names another commit is an error."""

from __future__ import annotations

from pathlib import Path

import yaml

from cvrepro.core.fileio import CvreproError
from cvrepro.core.vcs import git, git_bytes, tag_exists

TYPES = {"DS-": "dataset", "v": "model"}  # release tag prefix -> the dvc.yaml artifact type it versions


def artifact_name(root: Path, tag: str, rev: str) -> str | None:
    """The artifact that dvc.yaml at `rev` declares for the release `tag`'s kind, or None."""
    kind = TYPES["DS-" if tag.startswith("DS-") else "v"]
    text = git_bytes(root, rev, "dvc.yaml")
    artifacts = ((yaml.safe_load(text) if text else None) or {}).get("artifacts") or {}
    names = [name for name, spec in artifacts.items() if (spec or {}).get("type") == kind]
    if len(names) > 1:
        raise CvreproError(f"dvc.yaml: artifacts declares {len(names)} of type {kind} ({', '.join(names)}): "
                           "keep one, so that a release names one artifact version")
    return names[0] if names else None


def gto_tag(name: str, tag: str) -> str:
    """`model`, `v0.2.0` -> `model@v0.2.0`; `dataset`, `DS-0.2.1` -> `dataset@v0.2.1` (GTO wants semver)."""
    return f"{name}@v{tag.removeprefix('DS-').removeprefix('v')}"


def tag_release(root: Path, tag: str, commit: str) -> str | None:
    """Make GTO's annotated tag for the release `tag` on `commit` (idempotent: a rerun after a kill finds it);
    returns it, or None when dvc.yaml at that commit declares no artifact of the release's kind."""
    name = artifact_name(root, tag, commit)
    if name is None:
        return None
    gtag = gto_tag(name, tag)
    if tag_exists(root, gtag):
        tagged = git(root, "rev-parse", f"{gtag}^{{commit}}")
        if tagged != commit:
            raise CvreproError(f"the GTO tag {gtag} exists and names {tagged[:9]}, not the release commit "
                               f"{commit[:9]} of {tag}: check both by hand (tags are never moved)")
        return gtag
    git(root, "tag", "-a", gtag, "-m", f"Registered {name} version {gtag.split('@')[1]} ({tag}) for GTO / "
        f"`dvc artifacts get`", commit)
    return gtag
