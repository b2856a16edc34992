"""One group of the config (`cfg.check`, `cfg.evaluate`, a predictor spec's `model`) as its schema dataclass.

Functions that read one group take it typed (`check.max_items`, not `cfg["max_items"]`). Some of their callers
live in other modules and may still hand over the mapping (or, for a model, read it back from a predictor spec,
which is JSON): `section` builds that mapping over the schema's defaults once, and returns a typed one as is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cvrepro.config import schema


def section(value: Any, cls: type) -> Any:
    """`value` as a `cls` (a schema dataclass; `schema.Model` picks the model's own by its name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"a {cls.__name__} section or a mapping, got {type(value).__name__}")
    return schema.build(dict(value), cls)
