"""Reading `params.yaml`, the only config source stages use (so DVC tracks every value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cvrepro.core.fileio import CvreproError, canonical_json, sha256_bytes
from cvrepro.core.paths import PARAMS


def load_params(path: str | Path = PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CvreproError(f"{path}: not found; run `cvrepro compose` to compose it from conf/")
    with path.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise CvreproError(f"{path}: expected a mapping at the top level")
    return params


# Settings that change no model and no metric, outside the config ID: `check` (thresholds of `cvrepro check`,
# read by no stage) and `label_issues` (an analysis after evaluate), so tuning a dataset check or choosing
# `-S label_issues=kfold` neither renames a run nor makes its release differ from the same model's.
NOT_RUN_KEYS = ("check", "label_issues")


def run_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params a model and its metrics depend on: all but NOT_RUN_KEYS."""
    return {k: v for k, v in params.items() if k not in NOT_RUN_KEYS}


def config_id(params: dict[str, Any]) -> str:
    """The experiment's name plus a short hash of the composed config (`run_params`).

    Two runs with the same config ID ran with identical parameters (NOT_RUN_KEYS aside).
    """
    name = (params.get("experiment") or {}).get("name", "unnamed")
    return f"{name}+{sha256_bytes(canonical_json(run_params(params)).encode())[:8]}"
