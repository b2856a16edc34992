"""Benchmark the training loop's overhead, and what the CPU instruction-set pin costs.

    .venv/bin/python benchmarks/bench_train.py [--images N] [--epochs E] [--threads T] [--repeat R]
                                               [--isa] [--json]

Lays down the demo (`cvrepro demo`) in a temporary directory, composes params.yaml (smoke
experiment, fcos_tiny, batch 8) and runs the real `cvrepro snapshot`, `split` and `preprocess`.
Then, in this one process, interleaved, best of R:

  (a) bare loop (baseline): the same model (built from the same spec), the same arrays and
      batches (`make_loader`), the same threads and seed; forward, backward, plain
      optimizer step; no scheduler, clipping, logging, checkpoints or files;
  (b) the train stage's work: `learning.trainer.train(params, root)` as `cvrepro train` runs it
      (resume checkpoint every epoch, DVCLive, progress bar, the outputs), timed whole.

and reports images/s of each and the ratio (b)/(a) (target >= 0.95).

`--isa` instead runs (b) once per `train.cpu_isa` level (native, avx2, default), each in a fresh
process (the pin must be set before torch loads), and reports images/s against native and the
weights' sha256: equal hashes mean the pin did not change this machine's bits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cpu-isa", default="avx2")
    p.add_argument("--isa", action="store_true", help="compare the instruction-set levels instead")
    p.add_argument("--only", choices=["stage"], help=argparse.SUPPRESS)  # a child of --isa
    p.add_argument("--root", help=argparse.SUPPRESS)  # a child of --isa reuses the prepared data
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def prepare(root: Path, args) -> dict:
    from cvrepro.config.compose import compose, dump

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(BIN / "cvrepro"), "demo", "--images", str(args.images), "--seed", "0", "--root", str(root)],
                   check=True, capture_output=True, env=env)
    conf = Path(__file__).resolve().parents[1] / "conf"
    params = compose(conf, ["experiment=smoke", f"train.epochs={args.epochs}", f"train.threads={args.threads}",
                            "train.batch_size=8", f"train.cpu_isa={args.cpu_isa}", "train.device=cpu"])
    (root / "params.yaml").write_text(dump(params))
    for stage in ("snapshot", "split", "preprocess"):
        subprocess.run([str(BIN / "cvrepro"), stage], cwd=root, check=True, capture_output=True, env=env)
    return params


def bare_loop(params: dict, root: Path) -> tuple[float, int]:
    import torch

    from cvrepro import tasks
    from cvrepro.core.fileio import read_json
    from cvrepro.core.paths import PROCESSED_INFO, processed_split
    from cvrepro.dataset.processed import ProcessedSplit
    from cvrepro.learning.artifacts import build_from_spec, predictor_spec
    from cvrepro.learning.engine import make_loader

    start = time.perf_counter()
    cfg = params["train"]
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    info = read_json(root / PROCESSED_INFO)
    model = build_from_spec(predictor_spec(params, info["class_map"]), info["size"], info["class_map"],
                            info["mean"], info["std"])
    split = ProcessedSplit(root / processed_split("train"))
    dataset = tasks.of_params(params).train_set(split, int(cfg["seed"]), float(cfg["hflip"]))
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    model.train()
    for epoch in range(int(cfg["epochs"])):
        for images, targets in make_loader(dataset, int(cfg["batch_size"]), int(cfg["seed"]), epoch, 0):
            loss = sum(model(list(images), list(targets)).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start, len(split) * int(cfg["epochs"])


def stage(params: dict, root: Path) -> tuple[float, int, str]:
    from cvrepro.learning.trainer import train

    start = time.perf_counter()
    info = train(params, root)
    return time.perf_counter() - start, info["train_images"] * info["epochs"], info["weights_sha256"]


def isa_levels(args, root: Path) -> dict:
    rows = {}
    for level in ("native", "avx2", "default"):
        env = {k: v for k, v in os.environ.items() if k not in (
            "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")}
        best = None
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--only", "stage", "--cpu-isa", level, "--root", str(root),
                                  "--epochs", str(args.epochs), "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True, env=env)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            best = row if best is None or row["images_per_s"] > best["images_per_s"] else best
        rows[level] = best
    for row in rows.values():
        row["vs_native"] = round(row["images_per_s"] / rows["native"]["images_per_s"], 3)
    return rows


def main() -> None:
    args = parse()
    from cvrepro.config.typed import typed
    from cvrepro.learning.devices import check_cpu_isa, isa_environment

    os.environ.update(isa_environment(args.cpu_isa))  # the pin, before torch loads (no params.yaml read yet)
    import torch
    import yaml

    if args.only:
        root = Path(args.root)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"]["cpu_isa"] = args.cpu_isa
        seconds, images, sha = stage(params, root)
        print(json.dumps({"cpu_isa": args.cpu_isa, "level_in_force": check_cpu_isa(typed(params).train),
                          "images_per_s": round(images / seconds, 2), "weights_sha256": sha}))
        return
    with tempfile.TemporaryDirectory(prefix="cvrepro-bench-train-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        params = prepare(root, args)
        setup = time.perf_counter() - t0
        header = (f"train benchmark: {args.images} demo images, fcos_tiny 128 px, batch 8, {args.epochs} epochs, "
                  f"threads {args.threads}, cpus {os.cpu_count()}, torch {torch.__version__}, {platform.machine()}")
        if args.isa:
            rows = isa_levels(args, root)
            if args.json:
                print(json.dumps(rows))
                return
            print(header + f", best of {args.repeat}\nsetup (untimed): {setup:.1f} s")
            print(f"  {'train.cpu_isa':14} {'in force':9} {'images/s':>9} {'vs native':>9}  weights sha256")
            for level, row in rows.items():
                print(f"  {level:14} {row['level_in_force']:9} {row['images_per_s']:9.2f} {row['vs_native']:9.3f}  "
                      f"{row['weights_sha256'][:16]}")
            return
        check_cpu_isa(typed(params).train)
        best = {"bare": None, "stage": None}
        for _ in range(args.repeat):
            s, n = bare_loop(params, root)
            best["bare"] = min(best["bare"] or s, s)
            s, n2, _sha = stage(params, root)
            best["stage"] = min(best["stage"] or s, s)
        rate = {"bare": n / best["bare"], "stage": n2 / best["stage"]}
        result = {"images_per_s": {k: round(v, 2) for k, v in rate.items()},
                  "ratio_stage_over_bare": round(rate["stage"] / rate["bare"], 3), "setup_s": round(setup, 1)}
        if args.json:
            print(json.dumps(result))
            return
        print(header + f", best of {args.repeat}\nsetup (untimed): {setup:.1f} s")
        print(f"  {'mode':36} {'best s':>7} {'images/s':>9}")
        print(f"  {'(a) bare loop (baseline)':36} {best['bare']:7.2f} {rate['bare']:9.2f}")
        print(f"  {'(b) train stage (trainer.train)':36} {best['stage']:7.2f} {rate['stage']:9.2f}")
        print(f"  ratio (b)/(a), images/s: {result['ratio_stage_over_bare']:.3f}x (target >= 0.95)")


if __name__ == "__main__":
    main()
