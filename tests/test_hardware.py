"""Training on real hardware settings, on this CPU-only machine: the device and precision of the
config, the instruction-set pin, torchrun's workers (gloo, 2 processes) and the resume of a
train stage killed with SIGKILL. Real torch, real torchrun, real DVC."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError, read_json, sha256_file
from cvrepro.core.paths import (CHECKPOINT, LABEL_MAP, LINEAGE, PREPROCESSING, RESUME_CHECKPOINT, TRAIN_INFO,
                                TRAIN_LOG_DIR, WEIGHTS)
from cvrepro.learning.engine import epoch_batches, rank_batches
from cvrepro.provenance.reproduce import same_hardware
from cvrepro.stages import evaluate
from cvrepro.stages.train import run as train

from helpers import copy_template, run, tiny_conf, tiny_params, write_params
from helpers.cpu import TEST_CPU_ISA

KILL = "CVREPRO_TEST_KILL_AFTER_STEP"
# Variables a shell might set to move the CPU kernels' level; the tests set them to show the pin wins.
ISA_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


@pytest.fixture(autouse=True)
def shell_without_pin(monkeypatch):
    """The conftest pin is not inherited by the `cvrepro` processes here: each sets its own."""
    for name in ISA_VARS:
        monkeypatch.delenv(name, raising=False)


def cli_train(root: Path, overrides: list[str] | None = None, env: dict | None = None, check: bool = True):
    """`cvrepro train` in a fresh process (the pin must precede torch's import), params from tiny_params."""
    write_params(root, tiny_params(overrides=overrides))
    return run(["cvrepro", "train"], root, check=check, env=env)


def fresh(tiny_data: Path, tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(tiny_data, root)
    return root


# --------------------------------------------------------------------------- device and precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_absent_cuda_is_a_clear_error(tiny_root):
    with pytest.raises(CvreproError, match=r"train.device is 'cuda' but this machine has no CUDA device .*"
                                           r"available: cpu"):
        train(tiny_params(overrides=["train.device=cuda"]), tiny_root)
    assert not (tiny_root / WEIGHTS).exists()
    res = cli_train(tiny_root, ["train.device=cuda"], check=False)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(errors) == 1, res.stderr
    assert "no CUDA device" in errors[0] and "available: cpu" in errors[0]


def test_unknown_device_precision_and_level_are_named(tiny_root):
    # compose refuses them first (tests/test_config_schema.py); the trainer's typed config names them to a
    # library caller, and `cvrepro train` where it reads params.yaml
    for key, value, message in [("device", "tpu", "train.device must be one of auto, cpu, cuda, mps, got 'tpu'"),
                                ("precision", "fp8", "train.precision must be one of .*, got 'fp8'"),
                                ("devices", 0, "train.devices must be an integer >= 1, got 0")]:
        params = tiny_params()
        params["train"][key] = value
        with pytest.raises(CvreproError, match=message):
            train(params, tiny_root)
    params = tiny_params()
    params["train"]["cpu_isa"] = "avx9"
    write_params(tiny_root, params)
    res = run(["cvrepro", "train"], tiny_root, check=False)
    assert res.returncode == 2 and "train.cpu_isa must be one of" in res.stderr and "got 'avx9'" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_pin_that_cannot_hold_is_an_error_not_a_silent_level(tiny_root):
    # conftest settled the kernels at the tests' level: asking for another level now cannot take effect.
    other = "default" if TEST_CPU_ISA != "default" else "avx2"
    with pytest.raises(CvreproError, match=f"train.cpu_isa is '{other}' but the CPU kernels run at "
                                           f"{TEST_CPU_ISA.upper()}: .*pin first"):
        train(tiny_params(overrides=[f"train.cpu_isa={other}"]), tiny_root)


def test_the_pin_holds_for_a_library_caller_whatever_the_environment_does(tmp_path):
    """In a process whose environment has no pin (or a wrong one) and that imported torch, the
    library's own pin decides the level as long as no torch operation ran; after one, the clear error."""
    probe = (
        "import os, sys, torch\n"
        "from cvrepro.config.schema import Train\n"
        "from cvrepro.learning import devices\n"
        "from cvrepro.core.fileio import CvreproError\n"
        "if sys.argv[1] == 'ran': torch.ones(8).add_(1)\n"
        "train = Train(seed=0, epochs=1, batch_size=1, optimizer='sgd', lr=0.1, weight_decay=0.0, warmup_iters=0,\n"
        "              hflip=0.0, threads=1, cpu_isa='default')\n"
        "devices.pin_cpu_isa(train)\n"
        "for name in devices.ISA_ENV: os.environ.pop(name, None)  # a fixture or helper edits the environment\n"
        "try:\n"
        "    print(devices.check_cpu_isa(train))\n"
        "except CvreproError as e:\n"
        "    print('error:', e)\n"
    )
    env = {"ATEN_CPU_CAPABILITY": "avx2"}  # the shell says otherwise: the config wins
    fresh = run([sys.executable, "-c", probe, "fresh"], tmp_path, env=env)
    assert fresh.stdout.strip() == "DEFAULT", fresh.stdout + fresh.stderr
    late = run([sys.executable, "-c", probe, "ran"], tmp_path, env=env)
    assert late.stdout.startswith("error: params.yaml: train.cpu_isa is 'default' but the CPU kernels run at AVX2")
    assert "pin first" in late.stdout and "'native'" in late.stdout


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_the_cpu_and_is_recorded(tiny_root):
    fp32 = train(tiny_params(), tiny_root)["weights_sha256"]
    params = tiny_params(overrides=["train.precision=bf16-mixed"])
    info = train(params, tiny_root)
    assert info["hardware"]["precision"] == "bf16-mixed" and info["hardware"]["class"].endswith("/bf16-mixed/x1")
    assert info["weights_sha256"] != fp32, "autocast had no effect"
    assert all(v == v and abs(v) < 1e6 for v in info["final_losses"].values())
    evaluate.run(params, tiny_root)
    lineage = read_json(tiny_root / LINEAGE)
    assert lineage["hardware"]["precision"] == "bf16-mixed" and lineage["params"]["train"]["precision"] == "bf16-mixed"


# --------------------------------------------------------------------------- instruction-set pin


@pytest.mark.slow
def test_pinned_level_gives_the_same_bits_whatever_higher_level_the_process_is_allowed(tiny_data, tmp_path):
    # Every x86-64 machine's best level is above `default` (SSE4), so the test pins that to have a higher
    # one to allow. Each run is a fresh `cvrepro train` process.
    pinned = cli_train(fresh(tiny_data, tmp_path, "pinned"), ["train.cpu_isa=default"])
    root = tmp_path / "pinned"
    want = sha256_file(root / WEIGHTS)
    hw = read_json(root / TRAIN_INFO)["hardware"]
    assert hw["cpu_isa"] == "DEFAULT" and hw["isa_environment"]["ONEDNN_MAX_CPU_ISA"] == "SSE41", pinned.stderr
    # the shell allows every level the CPU has: the pin still wins
    allowed = fresh(tiny_data, tmp_path, "allowed")
    cli_train(allowed, ["train.cpu_isa=default"],
              env={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"})
    assert sha256_file(allowed / WEIGHTS) == want
    assert read_json(allowed / TRAIN_INFO)["hardware"]["cpu_isa"] == "DEFAULT"
    # an unpinned run on a CPU whose best is SSE4 (emulated by capping every library) gives the same bits
    lower = fresh(tiny_data, tmp_path, "lower")
    cli_train(lower, ["train.cpu_isa=native"], env={"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                                                    "MKL_CBWR": "SSE4_2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"})
    assert sha256_file(lower / WEIGHTS) == want
    # and unpinned here (the machine's own kernels: AVX2 or AVX512) gives other bits: the pin makes them portable
    native = fresh(tiny_data, tmp_path, "native")
    cli_train(native, ["train.cpu_isa=native"])
    probe = "import torch; torch.zeros(1) + 1; print(torch.backends.cpu.get_cpu_capability())"
    unpinned = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}  # conftest pins this process
    machine = subprocess.run([sys.executable, "-c", probe], env=unpinned, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert read_json(native / TRAIN_INFO)["hardware"]["cpu_isa"] == machine != "DEFAULT"
    assert sha256_file(native / WEIGHTS) != want


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_checkpoint_of_other_params_is_named_and_not_resumed(tiny_data, tmp_path):
    root = fresh(tiny_data, tmp_path, "run")
    killed = cli_train(root, env={KILL: "9"}, check=False)  # 7 steps per epoch: killed in epoch 2
    assert killed.returncode == -9 and (root / RESUME_CHECKPOINT).is_file() and not (root / WEIGHTS).exists()
    assert torch.load(root / RESUME_CHECKPOINT, weights_only=False)["epoch"] == 1
    res = cli_train(root, ["train.lr=0.02"])
    assert "ignoring models/.resume/checkpoint.pt (epoch 1): made from other params; training from epoch 0" in res.stderr
    assert read_json(root / TRAIN_INFO)["resumed_from_epoch"] is None
    assert not (root / RESUME_CHECKPOINT).exists()  # a finished run leaves none behind


def test_rank_batches_are_disjoint_shards_of_the_epoch():
    assert rank_batches(30, 4, 0, 3, 0, 1) == epoch_batches(30, 4, 0, 3)
    for n, world in [(30, 2), (9, 4), (3, 4)]:
        shards = [rank_batches(n, 4, 0, 1, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1, "every rank takes the same number of steps"
        seen = [i for s in shards for b in s for i in b]
        assert set(seen) == set(range(n)) and all(len(b) >= 1 for s in shards for b in s)
        padding = max(world - (n % (4 * world) or 4 * world), 0)  # a last global batch smaller than world
        assert len(seen) == n + padding and padding == (1 if n == 3 else 0)
    assert rank_batches(30, 4, 0, 1, 0, 2) != rank_batches(30, 4, 0, 2, 0, 2), "reshuffled every epoch"


def test_bit_exact_only_on_the_recorded_hardware_class():
    cpu = {"class": "cpu/x86_64/AVX2/32/x1", "deterministic": True}
    assert same_hardware(cpu, dict(cpu))[0]
    epyc, xeon = {**cpu, "device_type": "cpu", "device_name": "AMD EPYC"}, {**cpu, "device_type": "cpu",
                                                                           "device_name": "Intel(R) Xeon(R)"}
    assert same_hardware(epyc, dict(epyc))[0]
    ok, why = same_hardware(epyc, xeon)  # one class (level), two CPU models: metrics, not bits
    assert not ok and "CPU model differs: recorded AMD EPYC" in why
    ok, why = same_hardware(cpu, {**cpu, "class": "cuda/NVIDIA H100/cuda13.0/cudnn92400/32/x1"})
    assert not ok and "hardware class differs" in why
    assert not same_hardware({**cpu, "deterministic": False}, cpu)[0]
    assert same_hardware(None, cpu) == (True, "the record predates hardware records: compared bit for bit, "
                                              "as it was made")


# --------------------------------------------------------------------------- through DVC


@pytest.fixture(scope="module")
def data_stages_run(tmp_path_factory) -> Path:
    """The template with the smoke experiment as default, 40 demo images tracked and the data stages
    (snapshot, split, preprocess) run and committed: built once, each test trains on its own copy."""
    project = copy_template(tmp_path_factory.mktemp("hardware") / "project")
    tiny_conf(project)
    run(["cvrepro", "demo", "--images", "40", "--seed", "3"], project)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    run(["dvc", "repro", "preprocess"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "template with demo data, data stages run"], project)
    return project


@pytest.fixture
def pipeline(data_stages_run: Path, tmp_path: Path) -> Path:
    """A private copy of `data_stages_run` (git, DVC cache and workspace): train and evaluate not run yet."""
    dest = tmp_path / "project"
    shutil.copytree(data_stages_run, dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_train_stage_killed_with_sigkill_resumes_to_the_same_bits(pipeline: Path):
    killed = run(["dvc", "repro"], pipeline, check=False, env={KILL: "9"})
    assert killed.returncode != 0 and "Running stage 'train'" in killed.stdout
    assert (pipeline / RESUME_CHECKPOINT).is_file() and not (pipeline / WEIGHTS).exists()
    assert run(["git", "status", "--porcelain", "models"], pipeline).stdout == ""  # git-ignored, not a DVC out
    resumed = run(["dvc", "repro"], pipeline)
    assert "resuming from models/.resume/checkpoint.pt: 1 epoch(s) done" in resumed.stderr + resumed.stdout
    info = read_json(pipeline / TRAIN_INFO)
    assert info["resumed_from_epoch"] == 1 and not (pipeline / RESUME_CHECKPOINT).exists()
    loss_log = pipeline / TRAIN_LOG_DIR / "plots/metrics/loss.tsv"
    assert len(loss_log.read_text().splitlines()) == 3  # header + both epochs, the first replayed
    resumed_sha = sha256_file(pipeline / WEIGHTS)
    run(["dvc", "repro", "-f", "train"], pipeline)  # uninterrupted, from scratch
    assert read_json(pipeline / TRAIN_INFO)["resumed_from_epoch"] is None
    assert sha256_file(pipeline / WEIGHTS) == resumed_sha == info["weights_sha256"]


@pytest.mark.slow
def test_two_processes_through_torchrun_from_dvc_exp_run(pipeline: Path):
    res = run(["dvc", "exp", "run", "-S", "train.devices=2"], pipeline)
    assert "torch.distributed.run --nproc-per-node=2" in res.stderr + res.stdout
    info = read_json(pipeline / TRAIN_INFO)
    hw = info["hardware"]
    assert hw["world_size"] == 2 and hw["device_type"] == "cpu" and hw["class"].endswith("/x2")
    # both ranks ended with the same weights, and they are the ones written (no BatchNorm re-estimation here)
    assert info["rank_weights_sha256"] == [info["weights_sha256"]] * 2 == [sha256_file(pipeline / WEIGHTS)] * 2
    assert info["written_by"]["rank"] == 0 and info["written_by"]["world_size"] == 2
    loss_log = pipeline / TRAIN_LOG_DIR / "plots/metrics/loss.tsv"
    assert len(loss_log.read_text().splitlines()) == 3  # one writer: header + one row per epoch
    lineage = read_json(pipeline / LINEAGE)
    assert lineage["hardware"]["world_size"] == 2 and lineage["params"]["train"]["devices"] == 2
    # a dead worker fails the stage with a clear error, and no outputs (removed first, as DVC does)
    assert "devices: 2" in (pipeline / "params.yaml").read_text()  # the experiment's params stay in the workspace
    outs = [WEIGHTS, CHECKPOINT, TRAIN_INFO, LABEL_MAP, PREPROCESSING]
    for out in outs:
        (pipeline / out).unlink()
    failed = run(["cvrepro", "train"], pipeline, check=False, env={KILL: "2"})
    assert failed.returncode == 2 and "a worker of the 2x1-process run failed" in failed.stderr
    assert "exitcode  : -9" in failed.stderr  # torchrun names the dead worker
    assert [out for out in outs if (pipeline / out).exists()] == []
    assert [p.name for p in (pipeline / "models").iterdir() if p.name.endswith(".tmp")] == []


def test_several_machines_launch_node_0_here_or_say_what_is_missing(monkeypatch):
    from cvrepro.learning.distributed import launch_command

    train = typed(tiny_params()).train
    cfg = dataclasses.replace(train, devices=8, num_nodes=2)
    monkeypatch.delenv("CVREPRO_RDZV_ENDPOINT", raising=False)
    with pytest.raises(CvreproError, match="train.num_nodes is 2: set CVREPRO_RDZV_ENDPOINT=host:port"):
        launch_command(cfg)
    monkeypatch.setenv("CVREPRO_RDZV_ENDPOINT", "head-0:29500")
    cmd = launch_command(cfg)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-3:] == ["-m", "cvrepro.cli", "train"]
    assert {"--nproc-per-node=8", "--nnodes=2", "--node-rank=0", "--master-addr=head-0", "--master-port=29500"} <= set(cmd)
    assert "--standalone" in launch_command(dataclasses.replace(train, devices=2, num_nodes=1))
