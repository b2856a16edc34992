"""cvrepro: a DVC pipeline template for reproducible computer-vision datasets and models."""

__version__ = "0.1.0"


def load_model(version: str, repo: str = ".", remote: str | None = None, runtime: str = "torch", threads: int = 1,
               device: str = "auto"):
    """A released model (`vX.Y.Z`) fetched through DVC at its tag, run by PyTorch (runtime="torch", on `device`)
    or by ONNX Runtime on the release's parity-checked `model.onnx` (runtime="onnx"); see
    cvrepro.provenance.loading."""
    from cvrepro.provenance.loading import load_model as _load  # torch is imported only when a model is loaded

    return _load(version, repo=repo, remote=remote, runtime=runtime, threads=threads, device=device)
