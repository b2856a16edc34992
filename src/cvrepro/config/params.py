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


# Settings of analyses run after evaluate that change no model and no metric: outside the config ID, so
# choosing `-S label_issues=kfold` neither renames a run nor makes its release differ from the same model's.
NOT_IN_CONFIG_ID = ("label_issues",)


def config_id(params: dict[str, Any]) -> str:
    """The experiment's name plus a short hash of the whole composed config (but NOT_IN_CONFIG_ID).

    Two runs with the same config ID ran with identical parameters.
    """
    name = (params.get("experiment") or {}).get("name", "unnamed")
    hashed = {k: v for k, v in params.items() if k not in NOT_IN_CONFIG_ID}
    return f"{name}+{sha256_bytes(canonical_json(hashed).encode())[:8]}"
