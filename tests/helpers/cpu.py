"""The CPU instruction-set level the in-process tests train at: the template's `train.cpu_isa` (avx2)
unless CVREPRO_TEST_CPU_ISA names another (`make test-cpu-level` sets `default`, a level below any
x86-64 CPU's native one, so a pin that does not hold shows on every machine, not only on AVX-512 ones)."""

from __future__ import annotations

import os

TEST_CPU_ISA = os.environ.get("CVREPRO_TEST_CPU_ISA", "avx2")


def pinned_train():
    """The tests' `train` section, typed (the template's conf/ at TEST_CPU_ISA): what `devices.pin_cpu_isa`
    takes. Composing conf/ runs no torch operation, so the pin made from it still comes first."""
    from pathlib import Path

    from cvrepro.config.compose import compose
    from cvrepro.config.typed import typed

    conf = Path(__file__).resolve().parents[2] / "conf"
    return typed(compose(conf, [f"train.cpu_isa={TEST_CPU_ISA}"])).train
