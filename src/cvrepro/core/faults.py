"""Deterministic fault injection for the tests: kill this process at a named step.

`CVREPRO_KILL_AT=release:after-commit cvrepro release dataset` dies by SIGKILL the
moment the release reaches that step, exactly as a power cut or an OOM kill would,
so the tests can check that the next command repairs what was left, without timing
games. Unset (always, outside tests) it costs one dictionary lookup.

Named steps: release:before-push, release:after-push, release:after-write,
release:after-commit, release:after-tag; import:converted, import:swapped-0,
import:swapped-1, import:swapped, import:before-dvc-add; predict:written (every output
written in the temporary folder, before it is renamed to --out).
"""

from __future__ import annotations

import os
import signal

ENV = "CVREPRO_KILL_AT"


def kill_point(step: str) -> None:
    """SIGKILL this process if CVREPRO_KILL_AT names `step` (a test hook; see the module doc)."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
