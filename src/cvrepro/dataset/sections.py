"""One model setting read alike from the typed config's `model` section and from a predictor spec's `model`
record (JSON, perhaps of an older release, built into a model by `cvrepro predict` and `release`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from cvrepro.config.params import recorded


def model_value(model: Any, key: str, default: Any = None) -> Any:
    """One setting of a model section: a typed one's attribute, else a predictor spec's `model` record (JSON,
    perhaps of an older release) read as recorded. Keys vary by model kind (`score_thresh` only on detectors),
    hence the default."""
    if dataclasses.is_dataclass(model) and not isinstance(model, type):
        return getattr(model, key, default)  # the model kind varies: a key of one kind only
    return recorded(model, key, default)
