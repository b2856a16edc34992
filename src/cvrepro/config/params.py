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


def config_id(params: dict[str, Any]) -> str:
    """The experiment's name plus a short hash of the whole composed config.

    Two runs with the same config ID ran with identical parameters.
    """
    name = (params.get("experiment") or {}).get("name", "unnamed")
    return f"{name}+{sha256_bytes(canonical_json(params).encode())[:8]}"
