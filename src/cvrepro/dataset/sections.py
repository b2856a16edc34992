"""One group of the config (`cfg.check`, `cfg.evaluate`, a predictor spec's `model`) as its schema dataclass.

Functions that read one group take it typed (`check.max_items`, not `cfg["max_items"]`). Some of their callers
live in other modules and may still hand over the mapping (or, for a model, read it back from a predictor spec,
which is JSON): `section` builds that mapping over the schema's defaults once, and returns a typed one as is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cvrepro.config import schema
from cvrepro.config.params import recorded


def section(value: Any, cls: type) -> Any:
    """`value` as a `cls` (a schema dataclass; `schema.Model` picks the model's own by its name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"a {cls.__name__} section or a mapping, got {type(value).__name__}")
    return schema.build(dict(value), cls)


def model_value(model: Any, key: str, default: Any = None) -> Any:
    """One setting of a model section: a typed one's attribute, else a predictor spec's `model` record (JSON,
    perhaps of an older release) read as recorded. Keys vary by model kind (`score_thresh` only on detectors),
    hence the default."""
    if dataclasses.is_dataclass(model) and not isinstance(model, type):
        return getattr(model, key, default)  # the model kind varies: a key of one kind only
    return recorded(model, key, default)
