"""`cvrepro.load_model("v0.2.0")`: a released model, ready to predict on an image.

The weights, label map and pre/post-processing spec are fetched through DVC at
the release's tag (from the local cache, or the remote if the cache lacks them)
and checked against the sha256 in the release record before use. The predictor
applies the release's own preprocessing (recorded in `preprocessing.json`), so a
release keeps predicting the same way whatever the current code's defaults are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cvrepro.core.fileio import CvreproError, sha256_file
from cvrepro.core.paths import LABEL_MAP, PREPROCESSING, WEIGHTS
from cvrepro.learning.predictor import Predictor

_FILES = (WEIGHTS, LABEL_MAP, PREPROCESSING)


def fetch_release_files(version: str, repo: str | Path = ".", remote: str | None = None,
                        dest: Path | None = None, files: tuple[Path, ...] = _FILES) -> tuple[Path, dict]:
    """Download a model release's `files` into `dest`, each checked against the release
    record's sha256 (a file without one is refused); returns (dest, record)."""
    import dvc.api

    from cvrepro.provenance.registry import record_at, record_path

    repo = Path(repo)
    record = record_at(repo, version)
    dest = Path(dest or tempfile.mkdtemp(prefix=f"cvrepro-{version}-"))
    dest.mkdir(parents=True, exist_ok=True)
    for rel in files:
        target = dest / rel.name
        try:
            with dvc.api.open(rel.as_posix(), repo=str(repo), rev=version, remote=remote, mode="rb") as src, \
                    open(target, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
        except Exception as e:  # DVC's errors vary (no remote, missing in cache and remote, ...)
            raise CvreproError(f"{rel} at {version}: cannot fetch it through DVC ({type(e).__name__}: {e}); "
                               "DVC also calls a file missing when the remote's copy fails its md5 check") from None
        want = record.get("artifacts", {}).get(str(rel)) or (record.get("export") or {}).get("files", {}).get(str(rel))
        if not want:
            raise CvreproError(f"{record_path(version)} at {version}: artifacts has no sha256 for {rel}")
        got = sha256_file(target)
        if got != want:
            raise CvreproError(f"{rel} at {version}: sha256 {got} differs from the release record's {want}: "
                               "the stored copy was altered")
    return dest, record


RUNTIMES = ("torch", "onnx")


def load_model(version: str, repo: str | Path = ".", remote: str | None = None, runtime: str = "torch",
               threads: int = 1, device: str = "auto") -> Predictor:
    """The released model `version` (a `vX.Y.Z` tag of `repo`) as a Predictor in eval mode.

    runtime "torch": the PyTorch model built from `model.pt`, on `device` (auto: CUDA, then MPS, then the
    CPU; an absent device is an error); "onnx": the release's `model.onnx` in ONNX Runtime (`threads`
    intra-op threads), which gave the same predictions within the tolerance recorded in the release
    record's `export.parity` when the release was made. Both apply the same pre- and post-processing, so
    their outputs have the same form."""
    if runtime not in RUNTIMES:
        raise CvreproError(f"load_model: runtime '{runtime}' is not one of {', '.join(RUNTIMES)}")
    with tempfile.TemporaryDirectory(prefix=f"cvrepro-{version}-") as tmp:
        if runtime == "onnx":
            return _load_onnx(version, repo, remote, Path(tmp), threads)
        from cvrepro.learning.artifacts import load_predictor
        from cvrepro.learning.devices import resolve_device

        target = resolve_device(device)
        folder, record = fetch_release_files(version, repo, remote, Path(tmp))
        model, spec, label_map = load_predictor(folder, target)
    return Predictor(model, spec, label_map, version, record)


def _load_onnx(version: str, repo: str | Path, remote: str | None, tmp: Path, threads: int) -> Predictor:
    from cvrepro.core.fileio import read_json
    from cvrepro.provenance.export import OnnxModel, bundle_files
    from cvrepro.provenance.registry import record_at, record_path

    if not (record_at(Path(repo), version).get("export") or {}).get("files"):
        raise CvreproError(f"{record_path(version)} at {version}: the release has no ONNX export (released before "
                           "exports existed): load it with runtime='torch'")
    onnx = bundle_files(version)["onnx"]
    folder, record = fetch_release_files(version, repo, remote, tmp, files=(LABEL_MAP, PREPROCESSING, onnx))
    model = OnnxModel(folder / onnx.name, threads=threads)  # the session holds the graph: tmp may go
    return Predictor(model, read_json(folder / PREPROCESSING.name), read_json(folder / LABEL_MAP.name), version, record)
