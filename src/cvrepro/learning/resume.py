"""Resume a killed train stage from its last epoch, but only from a checkpoint of the same run.

The resume checkpoint lives at models/.resume/checkpoint.pt, outside the stage's DVC outputs
(DVC deletes those before it reruns a stage) and git-ignored. It carries a key: the sha256 of the
processed data, of the params, of the code (every .py of cvrepro, and the torch version) and the
hardware class. A checkpoint whose key differs is named, ignored and, at the next epoch, replaced:
resuming another run's weights would give a model no config describes.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from cvrepro.config.params import run_params
from cvrepro.config.typed import ParamsLike
from cvrepro.core.fileio import canonical_json, sha256_file
from cvrepro.core.paths import PROCESSED_DIR, RESUME_CHECKPOINT


def code_sha256() -> str:
    import torch

    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _dir_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def resume_key(params: ParamsLike, root: Path, hardware_class: str) -> dict[str, str]:
    return {"data": _dir_sha256(root / PROCESSED_DIR),
            "params": hashlib.sha256(canonical_json(run_params(params)).encode()).hexdigest(),  # as the config ID
            "code": code_sha256(),
            "hardware": hardware_class}


def load(root: Path, key: dict) -> dict | None:
    """The resume checkpoint if it was made by this very run (same key); else None, saying why."""
    import torch

    path = root / RESUME_CHECKPOINT
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # written atomically, so only a foreign or damaged file gets here
        print(f"ignoring {RESUME_CHECKPOINT}: unreadable ({type(e).__name__}); training from epoch 0", file=sys.stderr)
        return None
    theirs = ckpt.get("key", {}) if isinstance(ckpt, dict) else {}
    differ = [name for name in key if theirs.get(name) != key[name]]
    if differ:
        print(f"ignoring {RESUME_CHECKPOINT} (epoch {ckpt.get('epoch')}): made from other "
              f"{', '.join(differ)}; training from epoch 0", file=sys.stderr)
        return None
    print(f"resuming from {RESUME_CHECKPOINT}: {ckpt['epoch']} epoch(s) done", file=sys.stderr)
    return ckpt


def apply(state: dict, model, optimizer, scheduler, scaler, device) -> None:
    """Put a loaded resume checkpoint back: the weights, the optimiser, the scheduler, the scaler and the
    random state, so the next epoch runs as it would have without the kill."""
    import torch

    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def save(root: Path, checkpoint: dict, key: dict, history: list[dict], lrs: list[float], scaler, device) -> None:
    """Write the resume checkpoint: the run's checkpoint after an epoch plus its key, the losses and learning
    rates so far (the log is replayed on resume), the scaler and the random state."""
    import torch

    from cvrepro.learning.artifacts import save_torch

    save_torch({**checkpoint, "key": key, "history": history, "lrs": lrs,
                "rng": torch.get_rng_state(), "scaler": scaler.state_dict() if scaler else None,
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
               root / RESUME_CHECKPOINT)


def clear(root: Path) -> None:
    """Remove the resume checkpoint (and any temporary file a kill left beside it)."""
    folder = root / RESUME_CHECKPOINT.parent
    for path in folder.glob(f"*{RESUME_CHECKPOINT.name}*") if folder.is_dir() else ():
        path.unlink(missing_ok=True)
