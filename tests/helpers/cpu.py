"""The CPU instruction-set level the in-process tests train at: the template's `train.cpu_isa` (avx2)
unless CVREPRO_TEST_CPU_ISA names another (`make test-cpu-level` sets `default`, a level below any
x86-64 CPU's native one, so a pin that does not hold shows on every machine, not only on AVX-512 ones)."""

from __future__ import annotations

import os

TEST_CPU_ISA = os.environ.get("CVREPRO_TEST_CPU_ISA", "avx2")
