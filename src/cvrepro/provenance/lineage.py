"""The lineage record: what code, data, config and environment produced a run's metrics.

One record per pipeline run (README, "The pipeline": evaluate; docs/safety.md). Everything here is read from
real sources: `git` for the code state, `importlib.metadata` for versions, sha256 of the
files for artifacts.
"""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import sys
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from cvrepro.core.fileio import CvreproError, canonical_json, sha256_file
from cvrepro.config.params import config_id
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.vcs import git_state
from cvrepro.provenance.registry import dataset_version

SCHEMA = "cvrepro.lineage/1"

_ENV_PACKAGES = ("torch", "torchvision", "dvc", "numpy", "pycocotools", "faster-coco-eval")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Interpreter, platform and the versions of the libraries that shape results."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for dist in _ENV_PACKAGES:
        env[dist] = _version(dist)
    threads = None
    if "torch" in sys.modules or env["torch"] is not None:
        try:
            import torch

            threads = torch.get_num_threads()
        except ImportError:
            pass
    env["torch_num_threads"] = threads
    # how OpenMP threads wait (cvrepro's default: PASSIVE, see cli.threads_env): timing, never the bits
    env["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return env


def sha256_dir(path: Path) -> str:
    """sha256 of a directory: of the canonical JSON of sorted [relative posix path, sha256] pairs.

    Covers every regular file below `path` (symlinks are followed); independent of
    the directory's location, mtimes and listing order.
    """
    path = Path(path)
    entries = sorted(
        (p.relative_to(path).as_posix(), sha256_file(p)) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(canonical_json([list(e) for e in entries]).encode()).hexdigest()


def dvc_hash(root: Path, rel: str) -> str | None:
    """``md5:<hash>`` of `rel` as DVC hashes it when it is an output of a dvc.yaml stage, else None.

    DVC keeps the hash of every file it has seen in its state database (keyed by inode, size
    and mtime), so for a stage output it has just written or checked this reads hashes
    instead of re-reading the data: seconds instead of minutes on 100k processed images.
    The value is DVC's own directory hash (the one in dvc.lock and the cache).
    """
    root = Path(root)
    if not (root / ".dvc").is_dir():
        return None
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            for stage in repo.index.stages:
                for out in stage.outs:
                    if out.def_path == rel:
                        return f"md5:{out.get_hash().value}"
    except DvcException as e:
        raise CvreproError(f"{rel}: DVC could not hash it: {e}") from None
    return None


def dir_hash(root: Path, rel: str) -> str:
    """A directory's hash for the lineage: DVC's (`dvc_hash`) for a stage output, else `sha256_dir`."""
    return dvc_hash(root, rel) or sha256_dir(Path(root) / rel)


def _artifact_key(root: Path, path: Path) -> tuple[str, Path]:
    full = path if path.is_absolute() else root / path
    try:
        key = full.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        key = full.as_posix()  # outside the project: record where it was
    return key, full


def artifact_hashes(root: Path, artifacts: Iterable[Path]) -> dict[str, str]:
    """{path relative to root: hash} for each file (sha256) or directory (`dir_hash`)."""
    root = Path(root)
    out: dict[str, str] = {}
    for a in artifacts:
        key, full = _artifact_key(root, Path(a))
        if full.is_file():
            out[key] = sha256_file(full)
        elif full.is_dir():
            out[key] = dir_hash(root, key)
        else:
            raise CvreproError(f"{key}: artifact not found, cannot record its hash")
    return out


def build_lineage(
    root: Path,
    params: ParamsLike,
    manifest: dict,
    metrics: dict,
    artifacts: list[Path],
    seeds: dict,
    extra: dict | None = None,
    git_exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """One lineage record (README, "The pipeline": evaluate; docs/safety.md) as a plain JSON-ready dict.

    `artifacts` are paths relative to `root` (or absolute paths inside it); directories are
    hashed with `dir_hash` (DVC's md5 of a stage output, which DVC has already computed). `git_exclude` is passed to `git_state` as its `exclude`.
    """
    cfg = typed(params)
    root = Path(root)
    snapshot_id = manifest.get("snapshot_id") if isinstance(manifest, dict) else None
    if not snapshot_id:
        raise CvreproError("manifest has no snapshot_id: cannot record which data this run used")
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": uuid.uuid4().hex,
        "time_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code": git_state(root, exclude=git_exclude),
        "dataset": {"version": dataset_version(root, snapshot_id), "snapshot_id": snapshot_id},
        "config_id": config_id(cfg),
        "seeds": copy.deepcopy(seeds),
        "params": cfg.as_dict(),  # the composition as written (a copy): the record's bytes do not change
        "environment": environment(),
        "metrics": copy.deepcopy(metrics),
        "artifacts": artifact_hashes(root, artifacts),
    }
    if extra:
        record["extra"] = copy.deepcopy(extra)
    return record
