"""The registry: every released dataset (`DS-x.y.z`) and model (`vX.Y.Z`) version.

The source of truth is git: each release is an annotated tag whose commit holds
the release record (`data/releases/DS-x.y.z.json`, `models/releases/vX.Y.Z.json`).
Records are read at their tag, so editing a file in the work tree cannot change
what a version says.
"""

from __future__ import annotations

import json
from pathlib import Path

from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import DATASET_RELEASES_DIR, MODEL_RELEASES_DIR
from cvrepro.core.vcs import git, git_bytes, versions

KINDS = {"dataset": "DS-", "model": "v"}


def record_path(tag: str) -> Path:
    folder = DATASET_RELEASES_DIR if tag.startswith("DS-") else MODEL_RELEASES_DIR
    return folder / f"{tag}.json"


def record_at(root: Path, tag: str) -> dict:
    """The release record of `tag`, as committed at that tag."""
    data = git_bytes(root, tag, record_path(tag).as_posix())
    if data is None:
        raise CvreproError(f"{record_path(tag)}: not found at tag {tag}; is {tag} a cvrepro release?")
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CvreproError(f"{record_path(tag)} at {tag}: invalid JSON ({e.msg}, line {e.lineno})") from None


def dataset_version(root: Path, snapshot_id: str) -> str | None:
    """The newest `DS-x.y.z` tag whose record names `snapshot_id`, else None (also outside git)."""
    for _, tag in reversed(versions(root, KINDS["dataset"])):
        if record_at(root, tag).get("snapshot_id") == snapshot_id:
            return tag
    return None


def newest(root: Path, kind: str) -> tuple[tuple[int, int, int], str] | None:
    found = versions(root, KINDS[kind])
    return found[-1] if found else None


def _tag_facts(root: Path) -> dict[str, dict]:
    out = git(root, "for-each-ref", "refs/tags",
              "--format=%(refname:short)%09%(objectname)%09%(*objectname)%09%(creatordate:iso-strict)")
    facts = {}
    for line in out.splitlines():
        name, obj, peeled, date = (line.split("\t") + ["", "", ""])[:4]
        facts[name] = {"commit": peeled or obj, "date": date}
    return facts


def _headline(metrics: dict) -> dict:
    """{split: {metric: value}} of the scalar metrics of each split."""
    return {split: {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for split, m in metrics.items() if isinstance(m, dict)}


def entries(root: Path) -> list[dict]:
    """Every release, datasets then models, each sorted by semantic version."""
    root = Path(root)
    facts = _tag_facts(root)
    rows = []
    for kind, prefix in KINDS.items():
        for _, tag in versions(root, prefix):
            record = record_at(root, tag)
            row = {"kind": kind, "version": tag, **facts.get(tag, {})}
            if kind == "dataset":
                stats = record.get("stats", {})
                row.update(images=stats.get("images"), objects=stats.get("objects"),
                           classes=len(record.get("class_map", {})), task=record.get("task"),
                           snapshot_id=record.get("snapshot_id"))
            else:
                row.update(dataset=record.get("dataset_version"), config_id=record.get("config_id"),
                           model=record.get("architecture", {}).get("name"),
                           metrics=_headline(record.get("metrics", {})))
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no releases yet: `cvrepro release dataset`, then `dvc repro` and `cvrepro release model`"
    lines = []
    for r in rows:
        when = (r.get("date") or "")[:10]
        commit = (r.get("commit") or "")[:9]
        if r["kind"] == "dataset":
            lines.append(f"{r['version']:<12} {when}  {commit}  {r['task']}: {r['images']} images, "
                         f"{r['objects']} objects, {r['classes']} classes")
        else:
            val = r["metrics"].get("val") or next(iter(r["metrics"].values()), {})
            shown = ", ".join(f"{k} {v:.3f}" for k, v in list(val.items())[:3])
            lines.append(f"{r['version']:<12} {when}  {commit}  {r['model']} on {r['dataset']}, "
                         f"config {r['config_id']}; val {shown}")
    return "\n".join(lines)
