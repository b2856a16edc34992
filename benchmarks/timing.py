"""Timing shared by the benchmarks (run as scripts: `python benchmarks/bench_x.py`, so this folder is on sys.path)."""

from __future__ import annotations

import time


def best(fn, repeat: int) -> tuple[float, object]:
    """The fastest of `repeat` calls of fn (seconds) and the last call's result: the least disturbed run."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result
