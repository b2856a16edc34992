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


NOT_RUN_KEYS = ("check",)  # read by no stage (`cvrepro check` thresholds): no part of what a run ran with


def run_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params a run depends on: all but NOT_RUN_KEYS, so tuning a dataset check changes no config ID."""
    return {k: v for k, v in params.items() if k not in NOT_RUN_KEYS}


def config_id(params: dict[str, Any]) -> str:
    """The experiment's name plus a short hash of the composed config (`run_params`).

    Two runs with the same config ID ran with identical parameters.
    """
    name = (params.get("experiment") or {}).get("name", "unnamed")
    return f"{name}+{sha256_bytes(canonical_json(run_params(params)).encode())[:8]}"
