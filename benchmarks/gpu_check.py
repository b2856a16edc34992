"""GPU check: the demo pipeline on one CUDA device in fp32 and bf16-mixed, each trained twice in
deterministic mode. Are the two runs' weights equal? How many images/s does training reach?

    .venv/bin/python benchmarks/gpu_check.py [--quick] [--images N] [--epochs E] [--out FILE]

Unattended, under 8 minutes on a current data-centre GPU (the full demo: 800 scenes, fcos_tiny,
12 epochs; `--quick`: 200 scenes, 3 epochs). It lays down the demo in a temporary directory, runs
the real `cvrepro snapshot/split/preprocess` once, then for each precision two fresh
`cvrepro train` + `cvrepro evaluate` processes with train.device=cuda, train.deterministic=true.
images/s is the training loop's own figure (models/train.json `throughput`: epochs only, no start-up).
A CPU run (fp32, same config, one epoch) gives the baseline figure in the same call, unless --no-cpu.

Prints a table and a verdict line per precision, and writes the JSON to --out (gpu_check.json).
Without CUDA it says so in one line and exits 2: it measures nothing it cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CONF = Path(__file__).resolve().parents[1] / "conf"


def sh(args: list[str], cwd: Path, env: dict) -> None:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        sys.exit(f"gpu_check: {' '.join(args[-2:])} failed in {cwd} (exit {res.returncode}):\n{tail}")


def one_run(base: Path, work: Path, overrides: list[str], env: dict) -> dict:
    from cvrepro.config.compose import compose, dump

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base, work)
    params = compose(CONF, overrides)
    (work / "params.yaml").write_text(dump(params))
    start = time.perf_counter()
    sh([str(BIN / "cvrepro"), "train"], work, env)
    wall = time.perf_counter() - start
    sh([str(BIN / "cvrepro"), "evaluate"], work, env)
    info = json.loads((work / "models/train.json").read_text())
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    val = metrics.get("val", {})
    return {"weights_sha256": info["weights_sha256"], "images_per_s": info["throughput"]["images_per_s"],
            "train_wall_s": round(wall, 1), "device": info["hardware"]["device_name"],
            "class": info["hardware"]["class"], "val_AP50": val.get("AP50"), "val_AP": val.get("AP"),
            "final_loss": info["final_losses"].get("loss")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="200 scenes, 3 epochs (about a minute)")
    p.add_argument("--images", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU baseline run")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--device", default="cuda", help="cpu: rehearse the script's plumbing on a CPU machine")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device on this machine (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): nothing measured", file=sys.stderr)
        return 2
    images = args.images or (200 if args.quick else 800)
    epochs = args.epochs or (3 if args.quick else 12)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU rehearsal"
    print(f"gpu_check: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}; demo {images} scenes, fcos_tiny, {epochs} epochs", flush=True)
    result = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "images": images, "epochs": epochs, "runs": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cvrepro-gpu-check-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        sh([str(BIN / "cvrepro"), "demo", "--images", str(images), "--seed", "0", "--root", str(base)], base, env)
        from cvrepro.config.compose import compose, dump

        (base / "params.yaml").write_text(dump(compose(CONF, [f"train.epochs={epochs}"])))
        for stage in ("snapshot", "split", "preprocess"):
            sh([str(BIN / "cvrepro"), stage], base, env)
        plan = [(precision, rep) for precision in ("32", "bf16-mixed") for rep in (1, 2)]
        if not args.no_cpu:
            plan.append(("cpu-32", 1))
        for precision, rep in plan:
            device = "cpu" if precision.startswith("cpu") else args.device
            # the CPU baseline trains one epoch: images/s is a per-epoch figure, and 12 CPU epochs would take minutes
            overrides = [f"train.epochs={1 if device == 'cpu' else epochs}", f"train.device={device}",
                         "train.deterministic=true",
                         f"train.precision={precision.removeprefix('cpu-')}"]
            row = one_run(base, Path(tmp) / f"{precision}-{rep}", overrides, env)
            result["runs"][f"{precision} run {rep}"] = row
            print(f"  {precision:11} run {rep}: {row['images_per_s']:8.1f} images/s  val AP50 {row['val_AP50']}  "
                  f"weights {row['weights_sha256'][:16]}  ({row['train_wall_s']} s)", flush=True)
    runs = result["runs"]
    print(f"summary ({card}, {time.perf_counter() - t0:.0f} s in all):")
    for precision in ("32", "bf16-mixed"):
        a, b = runs[f"{precision} run 1"], runs[f"{precision} run 2"]
        equal = a["weights_sha256"] == b["weights_sha256"]
        result[f"deterministic_{precision}"] = equal
        print(f"  {precision:11} deterministic weights equal across two runs: {'YES' if equal else 'NO'}; "
              f"images/s {a['images_per_s']}, {b['images_per_s']}")
    if "cpu-32 run 1" in runs:
        cpu = runs["cpu-32 run 1"]["images_per_s"]
        for precision in ("32", "bf16-mixed"):
            best = max(runs[f"{precision} run 1"]["images_per_s"], runs[f"{precision} run 2"]["images_per_s"])
            print(f"  {precision:11} vs CPU fp32 ({cpu} images/s, {os.cpu_count()} cores): {best / cpu:.1f}x")
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
