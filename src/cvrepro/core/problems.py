"""Collecting user-fixable problems, so one run reports many of them, not just the first;
and the number checks every validator shares."""

from __future__ import annotations

import math
from typing import Any

from cvrepro.core.fileio import CvreproError

MAX_PROBLEMS = 20


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Problems:
    """Up to `limit` messages, raised together as one CvreproError, one per line.

    `subject` names what was checked ("the dataset", "data/fix.csv") and `outcome` what did
    not happen because of them ("no manifest written")."""

    def __init__(self, subject: str = "the dataset", outcome: str = "no manifest written",
                 limit: int = MAX_PROBLEMS, outcome_on_single: bool = False):
        self.items: list[str] = []
        self.subject, self.outcome, self.limit = subject, outcome, limit
        self.outcome_on_single = outcome_on_single

    def add(self, message: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(message)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise CvreproError(self.items[0] + (f"; {self.outcome}" if self.outcome_on_single else ""))
        more = f" (stopped after the first {self.limit})" if self.full else ""
        lines = "\n".join(f"  {m}" for m in self.items)
        raise CvreproError(f"{len(self.items)} problems in {self.subject}{more}; {self.outcome}:\n{lines}")
