"""Test helpers shared by the test modules (import them: `from helpers import run, edit`);
fixtures stay in conftest.py."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


from cvrepro.config.compose import compose, dump
from cvrepro.dataset.demo import generate_demo
from cvrepro.stages import preprocess
from cvrepro.stages import snapshot
from cvrepro.stages import split

from helpers.cpu import TEST_CPU_ISA

REPO = Path(__file__).resolve().parents[2]

BIN = Path(sys.executable).parent  # the venv running pytest: cvrepro and dvc live here

TEMPLATE_FILES = ["conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore", "src",
                  "data/.gitignore", "data/snapshot/.gitignore", "data/splits/.gitignore", "models/.gitignore"]

# Tiny but real: the smoke experiment (2 epochs), one thread so timings are stable.
TINY_OVERRIDES = ["experiment=smoke", "train.batch_size=4", "train.threads=1", "train.warmup_iters=5",
                  f"train.cpu_isa={TEST_CPU_ISA}"]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com", **(env or {})}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res

def copy_template(dest: Path) -> Path:
    """The template's tracked files (conf/, dvc.yaml, .dvc/config, ...) in a fresh git repo."""
    for name in TEMPLATE_FILES:
        src = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    return dest

def tiny_params(root: Path = REPO, overrides: list[str] | None = None) -> dict:
    return compose(root / "conf", TINY_OVERRIDES + (overrides or []))

def prepared_data(root: Path, params: dict, **demo: int) -> Path:
    """The demo (`generate_demo(root, seed=3, **demo)`) taken through snapshot, split and preprocess (no DVC)."""
    generate_demo(root, seed=3, **demo)
    snapshot.run(params, root)
    split.run(params, root)
    preprocess.run(params, root)
    return root

def assert_trains_a_step(model, images, targets) -> None:
    """One training step: a finite loss whose gradients reach the parameters."""
    import math

    model.train()
    loss = sum(model(images, targets).values())
    assert math.isfinite(loss.item())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

def run_copy(data: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of prepared data, for tests that write models and metrics.

    The test runs inside it, as DVC runs stages from the project root (DVCLive
    looks for the DVC repo of the working directory)."""
    root = tmp_path / "run"
    shutil.copytree(data, root)
    monkeypatch.chdir(root)
    return root

def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(dump(params))

def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))

def tiny_conf(project: Path, epochs: int | None = None) -> None:
    """Make the smoke experiment the project's default config (conf/ edits, as a user would)."""
    edit(project / "conf/config.yaml", "experiment: C-01", "experiment: smoke")
    edit(project / "conf/train/default.yaml", "batch_size: 8", "batch_size: 4")
    edit(project / "conf/train/default.yaml", "threads: 2", "threads: 1")
    if epochs is not None:
        edit(project / "conf/experiment/smoke.yaml", "epochs: 2", f"epochs: {epochs}")
    run(["cvrepro", "compose", "--force"], project)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def s3_bucket(endpoint: str, name: str) -> str:
    """A new, empty bucket on the S3 server; returns its s3:// URL."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_ENV.items()
                                                 if k != "AWS_DEFAULT_REGION"},
                 region_name=S3_ENV["AWS_DEFAULT_REGION"]).create_bucket(Bucket=name)
    return f"s3://{name}"

def commit_all(root: Path, message: str, env: dict | None = None) -> None:
    run(["git", "add", "-A"], root, env=env)
    run(["git", "commit", "-qm", message], root, env=env)

def released_project(root: Path, images: int = 30, seed: int = 2, epochs: int | None = None,
                     env: dict | None = None) -> Path:
    """The template at `root` with the tiny config, a local DVC remote beside it,
    `images` demo images tracked, the data stages run and DS-0.1.0 released."""
    copy_template(root)
    tiny_conf(root, epochs=epochs)
    run(["dvc", "remote", "add", "--local", "-d", "tmp", str(root.parent / f"{root.name}.remote")], root)
    run(["cvrepro", "demo", "--images", str(images), "--seed", str(seed)], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "demo data", env)
    run(["dvc", "repro", "split"], root, env=env)
    commit_all(root, "snapshot and split", env)
    run(["cvrepro", "release", "dataset", "--notes", "first cut"], root, env=env)
    return root
