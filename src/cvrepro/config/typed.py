"""The config the library receives: params.yaml checked against the schema and built into its frozen
dataclasses (config/schema.py), so code reads `cfg.train.seed`, not `params["train"]["seed"]`, and a wrong key
or value is refused in one line where it is loaded, never deep inside a stage.

`typed` takes a composed mapping (a library caller's dict, a test's edited copy) or a `Params` (returned as
is); `load` reads params.yaml. `Params.as_dict()` gives the composition as written, for records and hashes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Union

from cvrepro.config.compose import validate_params
from cvrepro.config.params import load_params
from cvrepro.config.schema import Params, build
from cvrepro.core.paths import PARAMS

ParamsLike = Union[Params, Mapping[str, Any]]


def typed(params: ParamsLike, source: str = str(PARAMS)) -> Params:
    """`params` as its typed, read-only object; a mapping is checked first (CvreproError naming the key)."""
    if isinstance(params, Params):
        return params
    params = _plain(params)
    validate_params(params, source)
    cfg = build(params)
    object.__setattr__(cfg, "_raw", copy.deepcopy(dict(params)))  # frozen: set once, here; as_dict() copies it
    return cfg


def _plain(value: Any) -> Any:
    """Nested mappings as dicts: a notebook's `hydra.compose` result (an OmegaConf DictConfig, resolved) or a
    read-only view types like the dict params.yaml loads into."""
    if type(value).__name__ == "DictConfig":
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def override(cfg: Params, values: Mapping[str, Any], source: str = "command line") -> Params:
    """`cfg` with dotted keys set (`{"label_issues.k": 3}`), checked and built again from its composition, so the
    record (`as_dict`) holds the new values too. Use it, not `dataclasses.replace`, on a whole config: a replaced
    `Params` has lost the composition as written."""
    from omegaconf import OmegaConf

    conf = OmegaConf.create(cfg.as_dict())
    for dotted, value in values.items():
        OmegaConf.update(conf, dotted, value)
    return typed(conf, f"{source} ({', '.join(f'{k}={v}' for k, v in values.items())})")


def load(path: str | Path = PARAMS) -> Params:
    """params.yaml, typed: the one way a stage or command reads its config."""
    return typed(load_params(path), str(path))
