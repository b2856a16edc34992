"""Where and how training runs: the device (`train.device`), the precision (`train.precision`),
the determinism policy (`train.deterministic`) and the CPU instruction set (`train.cpu_isa`),
and the record of all of it that goes into models/train.json and the lineage.

Why the instruction-set pin: PyTorch's CPU kernels (ATen), oneDNN and MKL each pick the widest
vector instructions the CPU has, and each level sums in a different order, so the same run gives
other bits on another CPU model. Pinning all three to one level that nearly every x86-64 machine
has (AVX2) makes a CPU run bit-identical across CPU models, not only on one. ATen reads its pin
(`ATEN_CPU_CAPABILITY`) from the environment at its first operation in the process, not at
`import torch`, and keeps that level for the life of the process; oneDNN and MKL likewise at their
first use. So `pin_cpu_isa` must run before the first torch operation: `cvrepro <stage>` calls it
before the stage, the trainer calls it again before training (a library caller who imported torch
but ran nothing yet still gets the pin), and `check_cpu_isa` says whether it held, with the way out
when an earlier operation had already fixed another level.

This module imports torch only inside its functions, for that reason.
"""

from __future__ import annotations

import os
import platform
import sys

from typing import TYPE_CHECKING

from cvrepro.config.params import DEVICES, PRECISIONS
from cvrepro.core.fileio import CvreproError

if TYPE_CHECKING:
    from cvrepro.config.schema import Train

# train.cpu_isa -> (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_CBWR / MKL_ENABLE_INSTRUCTIONS);
# get_cpu_capability() reports the ATen level in upper case.
CPU_ISA_LEVELS = {
    "default": ("default", "SSE41", "SSE4_2"),
    "avx2": ("avx2", "AVX2", "AVX2"),
    "avx512": ("avx512", "AVX512_CORE", "AVX512"),
}
NATIVE = "native"  # no pin: the widest the CPU has (fastest; bits then depend on the CPU model)
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def isa_environment(level: str) -> dict[str, str]:
    """The environment variables that pin the CPU kernels to `level` (empty for native or off x86)."""
    if level == NATIVE or not _x86():
        return {}
    if level not in CPU_ISA_LEVELS:
        raise CvreproError(f"params.yaml: train.cpu_isa '{level}' is unknown "
                           f"({', '.join([*CPU_ISA_LEVELS, NATIVE])})")
    aten, onednn, mkl = CPU_ISA_LEVELS[level]
    return {"ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn, "DNNL_MAX_CPU_ISA": onednn,
            "MKL_CBWR": mkl, "MKL_ENABLE_INSTRUCTIONS": mkl}


def pin_cpu_isa(train: Train, now: bool = False) -> None:
    """Set the pin of `train.cpu_isa` (`train`: the typed section, `cfg.train`) in this process's
    environment (inherited by torchrun's workers).

    The config wins over whatever the shell set: the level is part of the result, so it lives in
    params.yaml. `native` sets nothing (the shell's variables, if any, and the CPU decide; the record
    names the level in force). Call before the first torch operation of the process.

    ATen settles its level at the first query or operation; once torch is loaded (or with `now`) this
    settles it at once, so that code which later edits the environment (a test fixture, a subprocess
    helper) cannot move it. A level an earlier operation already settled stays: `check_cpu_isa` says so."""
    os.environ.update(isa_environment(train.cpu_isa))
    if now or "torch" in sys.modules:
        import torch

        torch.backends.cpu.get_cpu_capability()


def check_cpu_isa(train: Train) -> str:
    """The ATen CPU level in force; a clear error when the configured pin did not take effect
    (torch was loaded before the pin, or the CPU lacks the level)."""
    import torch

    level = train.cpu_isa
    got = torch.backends.cpu.get_cpu_capability()
    if level == NATIVE or not _x86():
        return got
    want = CPU_ISA_LEVELS[level][0].upper()
    if got != want:
        why = ("a torch operation earlier in this process settled the level before the pin (ATen reads "
               "ATEN_CPU_CAPABILITY once, at its first operation), or this CPU lacks it"
               if os.environ.get("ATEN_CPU_CAPABILITY") == CPU_ISA_LEVELS[level][0]
               else f"ATEN_CPU_CAPABILITY is {os.environ.get('ATEN_CPU_CAPABILITY')!r}")
        raise CvreproError(f"params.yaml: train.cpu_isa is '{level}' but the CPU kernels run at {got}: {why}; "
                           f"pin first (cvrepro.learning.devices.pin_cpu_isa(cvrepro.config.typed.load().train) "
                           f"before any torch operation, as `cvrepro train` does), or if this CPU lacks {want}, set "
                           f"train.cpu_isa to a lower level or '{NATIVE}'")
    return got


def resolve_device(name: str, local_rank: int = 0):
    """`train.device` as a torch.device: auto picks CUDA, then MPS, then the CPU. A requested device that
    is absent is an error naming what is available, never a silent fall-back."""
    import torch

    name = str(name)
    if name not in DEVICES:
        raise CvreproError(f"params.yaml: train.device '{name}' is unknown ({', '.join(DEVICES)})")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        available = ["cpu"] + (["cuda"] if cuda else []) + (["mps"] if mps else [])
        built = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
        raise CvreproError(f"params.yaml: train.device is '{name}' but this machine has no {name.upper()} device "
                           f"({built}); available: {', '.join(available)} (or train.device: auto)")
    if name == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise CvreproError(f"params.yaml: train.devices asks for more than the {count} CUDA device(s) here")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def check_precision(precision: str, device) -> str:
    precision = str(precision)
    if precision not in PRECISIONS:
        raise CvreproError(f"params.yaml: train.precision '{precision}' is unknown ({', '.join(PRECISIONS)})")
    return precision


def autocast(device, precision: str):
    """The autocast context of `precision` on `device` (disabled for 32)."""
    import torch

    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device, precision: str):
    """A gradient scaler for fp16 (its small range underflows gradients); None otherwise."""
    import torch

    return torch.amp.GradScaler(device.type) if precision == "16-mixed" else None


def apply_determinism(deterministic: bool) -> None:
    """train.deterministic: deterministic algorithms, no cuDNN autotuning, and cuBLAS's fixed workspace.

    Ops without a deterministic kernel warn rather than stop the run (warn_only): the GPU check
    (benchmarks/gpu_check.py) says whether two runs gave equal bits."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    import torch

    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_record(device, precision: str, deterministic: bool, world_size: int, num_nodes: int,
                    train: Train) -> dict:
    """What produced the weights, for models/train.json and the lineage; `class` is what must match for
    a bit-for-bit comparison (`cvrepro reproduce`)."""
    import torch

    rec = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa_setting": train.cpu_isa,
        "isa_environment": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
        "machine": platform.machine(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "precision": precision,
        "deterministic": bool(deterministic),
        "world_size": int(world_size),
        "num_nodes": int(num_nodes),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    rec["class"] = hardware_class(rec)
    return rec


def hardware_class(rec: dict) -> str:
    """CPU: architecture + kernel level (the CPU model does not matter once pinned); GPU: the card and
    CUDA/cuDNN versions; plus the precision and the world size, which change the arithmetic."""
    if rec["device_type"] == "cpu":
        where = f"cpu/{rec['machine']}/{rec['cpu_isa']}"
        if rec.get("cpu_isa_setting") == NATIVE:
            where += f"/{rec['device_name']}"  # unpinned: the CPU model itself matters
    elif rec["device_type"] == "cuda":
        where = f"cuda/{rec['device_name']}/cuda{rec['cuda']}/cudnn{rec['cudnn']}"
    else:
        where = f"{rec['device_type']}/{rec['device_name']}"
    return f"{where}/{rec['precision']}/x{rec['world_size']}"


def torch_loaded() -> bool:
    return "torch" in sys.modules
