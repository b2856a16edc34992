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

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from cvrepro.core.fileio import CvreproError, read_json, sha256_file, write_json
from cvrepro.core.paths import MODELS_DIR, ROLLBACKS, WEIGHTS
from cvrepro.provenance.registry import record_at
from cvrepro.provenance.release import MODEL_ARTIFACTS
from cvrepro.core.vcs import parse_version



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
    from cvrepro.provenance.loading import fetch_release_files  # numpy and dvc.api: only when a rollback runs

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
