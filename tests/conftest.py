"""Shared fixtures: a throw-away copy of this template (real git, real DVC) and a
tiny processed demo dataset for the training and evaluation tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvrepro.compose import compose, dump
from cvrepro.demo import generate_demo
from cvrepro.stages import preprocess, snapshot, split

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running pytest: cvrepro and dvc live here
TEMPLATE_FILES = ["conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore", "src"]
# Tiny but real: the smoke experiment (2 epochs), one thread so timings are stable.
TINY_OVERRIDES = ["experiment=smoke", "train.batch_size=4", "train.threads=1", "train.warmup_iters=5"]


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_template(tmp_path / "project")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 40-image demo dataset taken through snapshot, split and preprocess (no DVC)."""
    root = tmp_path_factory.mktemp("tiny")
    generate_demo(root, seed=3, n_images=40)
    params = tiny_params()
    snapshot.run(params, root)
    split.run(params, root)
    preprocess.run(params, root)
    return root


@pytest.fixture
def tiny_root(tiny_data: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the tiny dataset, for tests that write models and metrics.

    The test runs inside it, as DVC runs stages from the project root (DVCLive
    looks for the DVC repo of the working directory)."""
    root = tmp_path / "run"
    shutil.copytree(tiny_data, root)
    monkeypatch.chdir(root)
    return root


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(dump(params))
