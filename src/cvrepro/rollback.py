"""`cvrepro rollback vX.Y.Z`: put a released model back into models/, safely.

The release's weights, label map, preprocessing spec and checkpoint are fetched
through DVC at the release's tag (local cache first, then the remote) into a
temporary folder inside models/, and each is checked against the release
record's sha256. Only when all four match are they renamed over models/; on any
mismatch or fetch failure models/ is left exactly as it was.

Nothing in git is touched: no tag is moved, no commit is made, dvc.lock is left
alone. The rollback is recorded as one more entry in the append-only
`models/releases/rollbacks.json` (git-tracked: commit it to share the fact).
Because dvc.lock still describes the pipeline's own newest model, `dvc status`
reports the train stage's outputs as modified until you decide: `dvc checkout
--force train` returns to the pipeline's model, `dvc repro` retrains (and so
replaces the rolled-back files); see docs/safety.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .io import CvreproError, read_json, sha256_file, write_json
from .paths import MODEL_RELEASES_DIR, MODELS_DIR, WEIGHTS
from .registry import record_at
from .release import MODEL_ARTIFACTS
from .vcs import parse_version

ROLLBACKS = MODEL_RELEASES_DIR / "rollbacks.json"  # append-only list of rollback entries


def rollback(root: Path, version: str, reason: str = "", remote: str | None = None) -> dict:
    """Restore release `version`'s model files into models/ and append the rollback entry; returns it."""
    root = Path(root)
    parse_version(version, "v")
    record = record_at(root, version)
    log = read_json(root / ROLLBACKS) if (root / ROLLBACKS).exists() else []  # read first: a bad log stops us early
    if not isinstance(log, list):
        raise CvreproError(f"{ROLLBACKS}: expected a JSON list of rollback entries")
    (root / MODELS_DIR).mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rollback-", dir=root / MODELS_DIR))  # same filesystem: rename works
    from .predictor import fetch_release_files  # numpy and dvc.api: only when a rollback runs

    try:
        try:
            fetch_release_files(version, root, remote, staging, files=tuple(MODEL_ARTIFACTS))
        except CvreproError as e:
            raise CvreproError(f"{e}; models/ left unchanged") from None
        weights = root / WEIGHTS
        before = sha256_file(weights) if weights.is_file() else None
        for rel in MODEL_ARTIFACTS:
            os.replace(staging / rel.name, root / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = {"time_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "to_version": version,
             "from_weights_sha256": before, "to_weights_sha256": record["artifacts"][str(WEIGHTS)],
             "reason": reason}
    write_json(root / ROLLBACKS, log + [entry])
    return entry


def cmd_rollback(args: argparse.Namespace) -> int:
    entry = rollback(Path(args.root), args.version, reason=args.reason or "", remote=args.remote)
    if args.json:
        print(json.dumps(entry, sort_keys=True, indent=2))
        return 0
    print(f"models/ now holds {entry['to_version']} (weights {entry['to_weights_sha256'][:16]}, "
          f"were {(entry['from_weights_sha256'] or 'absent')[:16]}); entry added to {ROLLBACKS}\n"
          f"commit it: git add {ROLLBACKS} && git commit -m 'Roll back to {entry['to_version']}'\n"
          "dvc.lock is unchanged, so `dvc status` shows the train outputs as modified until you choose: "
          "`dvc checkout --force train` undoes the rollback, `dvc repro` retrains over it (see docs/safety.md)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`cvrepro rollback`, added to the top-level parser by cli.py."""
    p = sub.add_parser("rollback", help="restore a model release's verified files into models/ and log it in "
                                        f"{ROLLBACKS} (no git or tag changes; see docs/safety.md)")
    p.add_argument("version", help="the model release to go back to, vX.Y.Z")
    p.add_argument("--reason", help="why: kept in the rollback entry")
    p.add_argument("--remote", help="DVC remote to fetch from when the cache lacks a file (default: the default remote)")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the rollback entry as JSON")
    p.set_defaults(func=cmd_rollback)
