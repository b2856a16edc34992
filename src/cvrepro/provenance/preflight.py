"""`cvrepro preflight`: refuse to train or release from unpinned code, data or config.

Each check is a row (name, pass/fail, reason). The train stage runs the checks
under `train.preflight` (strict: refuse; warn: record the failures in the
lineage record and go on); inside `dvc exp run` it always records rather than
refuses, since DVC commits the experiment's own state. `cvrepro release`
always runs them strictly.
"""

from __future__ import annotations

import os
from pathlib import Path

from cvrepro.config.schema import Params
from cvrepro.config.typed import ParamsLike, load, typed
from cvrepro.core.fileio import CvreproError, read_json
from cvrepro.core.paths import CONF_DIR, MANIFEST, PARAMS
from cvrepro.core.vcs import dvc_changed, git, parse_version, tag_exists, versions

CODE_PATHS = ["src", str(CONF_DIR), "dvc.yaml", str(PARAMS)]
DATA_FILES = ["data/raw.dvc", "data/labels.dvc"]


def in_dvc_stage() -> bool:
    """True inside a stage command run by `dvc repro`/`dvc exp run` (DVC holds the repo lock then)."""
    return bool(os.environ.get("DVC_STAGE"))


def in_dvc_experiment() -> bool:
    return bool(os.environ.get("DVC_EXP_BASELINE_REV"))


def _row(name: str, ok: bool, detail: str) -> dict:
    return {"check": name, "ok": bool(ok), "detail": detail}


def check_code(root: Path) -> dict:
    out = git(root, "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS, check=False)
    dirty = [line[3:] for line in out.splitlines() if line.strip()]
    if dirty:
        return _row("code clean", False, "uncommitted or untracked: " + ", ".join(dirty[:8]) + (" ..." if len(dirty) > 8 else ""))
    return _row("code clean", True, f"{', '.join(CODE_PATHS)} committed")


def check_data(root: Path, run_dvc: bool) -> dict:
    missing = [f for f in DATA_FILES if not (root / f).exists()]
    if missing:
        return _row("data pinned", False, f"{', '.join(missing)} missing: `dvc add data/raw data/labels` and commit")
    out = git(root, "status", "--porcelain", "--untracked-files=normal", "--", *DATA_FILES, check=False)
    if out.strip():
        return _row("data pinned", False, f"{', '.join(line[3:] for line in out.splitlines())} not committed")
    if run_dvc:  # inside a stage DVC holds the lock; `dvc repro` has just re-committed the .dvc files anyway
        try:
            changed = dvc_changed(root, *DATA_FILES)
        except CvreproError as e:
            return _row("data pinned", False, str(e))
        if changed:
            return _row("data pinned", False, f"the workspace differs from {', '.join(sorted(changed))}: "
                        "`dvc add` (or `dvc checkout`) and commit")
    return _row("data pinned", True, "the .dvc files are committed and match the workspace")


def check_dataset_released(root: Path) -> dict:
    from cvrepro.provenance.registry import dataset_version

    if not (root / MANIFEST).exists():
        return _row("dataset released", False, f"{MANIFEST} not found: run `dvc repro snapshot`")
    snapshot_id = read_json(root / MANIFEST).get("snapshot_id")
    version = dataset_version(root, snapshot_id)
    if version:
        return _row("dataset released", True, f"the snapshot is {version}")
    released = versions(root, "DS-")
    newest = f"; newest release is {released[-1][1]}" if released else "; no dataset release yet"
    return _row("dataset released", False, f"snapshot {snapshot_id[:19]}… is not a released DS version{newest}: "
                "`cvrepro release dataset`")


def check_params(root: Path) -> dict:
    from cvrepro.config.compose import check

    if not (root / CONF_DIR).is_dir():
        return _row("params composed", False, f"{CONF_DIR}/ not found: nothing to compose params.yaml from")
    try:
        diff = check(root)
    except CvreproError as e:  # conf/ or params.yaml does not fit the schema (config/schema.py): a failed check
        return _row("params composed", False, str(e))
    if diff:
        keys = ", ".join(k for k, _, _ in diff[:8])
        return _row("params composed", False, f"params.yaml differs from composing conf/ at {keys}")
    return _row("params composed", True, "params.yaml equals the composition of conf/")


def check_seeds(cfg: Params) -> dict:
    """The schema lets a seed be null (split.seed, train.seed: Optional), so a run may go unseeded; pinned it
    is not, and this row says so (strict refuses)."""
    seeds = {"split.seed": cfg.split.seed, "train.seed": cfg.train.seed}
    unset = [k for k, v in seeds.items() if v is None]
    if unset:
        return _row("seeds set", False, f"{', '.join(unset)} not an integer in params.yaml")
    return _row("seeds set", True, ", ".join(f"{k}={v}" for k, v in seeds.items()))


def check_version(root: Path, version: str | None) -> dict:
    if version is None:
        newest = versions(root, "v")
        after = f" after {newest[-1][1]}" if newest else ""
        return _row("model version free", True, f"computed at release{after}")
    tag = "v" + ".".join(map(str, parse_version(version, "v")))
    if tag_exists(root, tag):
        return _row("model version free", False, f"{tag} already exists")
    newest = versions(root, "v")
    if newest and parse_version(tag, "v") <= newest[-1][0]:
        return _row("model version free", False, f"{tag} is not greater than the newest release {newest[-1][1]}")
    return _row("model version free", True, f"{tag} is free")


def _seeds_row(root: Path, params: ParamsLike | None) -> dict:
    """check_seeds of `params` (None: root's params.yaml). A params.yaml the schema refuses is a failed row
    naming the key, as "params composed" is, not an error that would hide the other rows."""
    try:
        cfg = typed(params) if params is not None else load(root / PARAMS)
    except CvreproError as e:
        return _row("seeds set", False, str(e))
    return check_seeds(cfg)


def preflight(root: Path = Path("."), params: ParamsLike | None = None, version: str | None = None,
              checks: tuple[str, ...] | None = None) -> list[dict]:
    """Every check as a row; `checks` limits them by name (release dataset skips 'dataset released').
    `params`: the run's config (None: root's params.yaml, read only for the seeds row)."""
    root = Path(root)
    if git(root, "rev-parse", "--is-inside-work-tree", check=False) != "true":
        reason = f"{root.resolve()} is not in a git work tree: nothing is pinned"
        names = checks or ("code clean", "data pinned", "dataset released", "params composed", "seeds set",
                           "model version free")
        return [_seeds_row(root, params) if n == "seeds set" else _row(n, False, reason) for n in names]
    runs = {
        "code clean": lambda: check_code(root),
        "data pinned": lambda: check_data(root, run_dvc=not in_dvc_stage()),
        "dataset released": lambda: check_dataset_released(root),
        "params composed": lambda: check_params(root),
        "seeds set": lambda: _seeds_row(root, params),
        "model version free": lambda: check_version(root, version),
    }
    return [fn() for name, fn in runs.items() if checks is None or name in checks]


def format_rows(rows: list[dict]) -> str:
    width = max(len(r["check"]) for r in rows)
    return "\n".join(f"{'pass' if r['ok'] else 'FAIL'}  {r['check']:<{width}}  {r['detail']}" for r in rows)


def require(rows: list[dict], what: str) -> None:
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise CvreproError(f"preflight refuses to {what}:\n" + format_rows(failed))


def for_training(params: ParamsLike, root: Path = Path(".")) -> dict:
    """Run in the train stage under `train.preflight`; the result goes into train.json and the lineage."""
    cfg = typed(params)
    policy = cfg.train.preflight  # warn or strict: the schema refuses anything else
    rows = preflight(root, cfg, checks=("code clean", "data pinned", "dataset released", "params composed",
                                           "seeds set"))
    effective = "warn" if in_dvc_experiment() else policy  # DVC commits an experiment's own state
    if effective == "strict":
        require(rows, "train (train.preflight: strict)")
    failed = [r for r in rows if not r["ok"]]
    for r in failed:
        print(f"preflight warning: {r['check']}: {r['detail']}")
    return {"policy": policy, "effective": effective, "passed": not failed, "checks": rows}
