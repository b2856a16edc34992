"""Shared fixtures: a throw-away copy of this template (real git, real DVC), a tiny processed
demo dataset for the training and evaluation tests, a moto S3 server. Helpers: helpers/."""

from __future__ import annotations

import os

from cvrepro.learning.devices import pin_cpu_isa

from helpers.cpu import pinned_train

# The CPU kernels take their instruction-set level from the environment at torch's first operation
# and keep it for the process: pin the level of the tests' params (the template's avx2, or
# CVREPRO_TEST_CPU_ISA: `make test-cpu-level` runs the fast tests at `default`) and settle it now,
# so that a test which later edits the environment (test_hardware removes the variables for its
# subprocesses) cannot move the level of the in-process runs.
pin_cpu_isa(pinned_train(), now=True)

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import BIN, copy_template, tiny_params, prepared_data, run_copy, free_port, released_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_template(tmp_path / "project")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 40-image detection demo, prepared."""
    return prepared_data(tmp_path_factory.mktemp("tiny"), tiny_params(), n_images=40)


@pytest.fixture
def tiny_root(tiny_data: Path, tmp_path: Path, monkeypatch) -> Path:
    return run_copy(tiny_data, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-API server on a free 127.0.0.1 port, for the whole session."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}")
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """One released project per test module (30 images, DS-0.1.0): read it, don't change it."""
    return released_project(tmp_path_factory.mktemp("released") / "project")


@pytest.fixture
def released_copy(released: Path, tmp_path: Path) -> Path:
    """A private copy of `released` (its DVC remote is shared) for a test that changes it."""
    dest = tmp_path / "project"
    shutil.copytree(released, dest, symlinks=True)
    return dest


# The longest files (each builds and trains a released project) start first, then the other slow ones, so
# that the workers of `make test` (pytest-xdist, a file per worker) finish together instead of one waiting
# for a long file that started last. Order only: every test runs, and each file keeps its own order.
# Largest first, by each file's CPU seconds measured in a 2-worker run (user+sys of the worker and of the processes
# it ran: bundle 220, hardware 205, reproduce 197, e2e 185, concurrency 159, pipeline 144, release 120, triage 114,
# tasks 86, preflight 74, own data 48, dying remote 24 + ~10 s of waiting); the short files then fill in, so that
# both workers end within seconds. (pytest_configure keeps xdist from reordering the files by their test counts.)
LONGEST_FIRST = ("test_release_bundle.py", "test_hardware.py", "test_reproduce.py", "test_release_e2e.py",
                 "test_concurrency.py", "test_pipeline.py", "test_release.py", "test_triage.py",
                 "test_tasks_pipeline.py", "test_preflight.py", "test_own_data_e2e.py", "test_remote_failures.py")


def pytest_configure(config):
    # pytest-xdist (3.x) sends a loadfile run's files out by their number of tests, most first, unless told
    # --no-loadscope-reorder: that would start the long files with one or two tests (triage, the dying remote, the
    # release scenario) last and undo the order below. The order below is the one wanted: keep it.
    if getattr(config.option, "loadscopereorder", None):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:  # per file: a file's tests stay together and in their order
        if item.path.name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(item.path.name)
        return (1 if item.path in slow_files else 2), 0

    items.sort(key=rank)  # stable
