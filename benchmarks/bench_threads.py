"""Benchmark torch's CPU threads under contention: which default does not collapse when the machine is busy.

    .venv/bin/python benchmarks/bench_threads.py [--steps N] [--repeat R] [--load L] [--json]

Each timed run is a fresh process (OpenMP reads its environment once, at start) that
trains the demo's detector (fcos_tiny, batch 8, 128 px, SGD) for N steps on seeded random
images and prints its wall time, CPU time and the sha256 of the final weights. Settings:

  1 thread            torch.set_num_threads(1)
  2 threads           torch.set_num_threads(2), OpenMP's default wait policy (threads spin at barriers)
  2 threads, PASSIVE  the same with OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers)

each alone and beside L busy processes (default: one per core) that keep every core
busy, as another job, a CI neighbour or a pod's CPU limit does. The settings run
interleaved, R times (default 5); the report gives the median and the worst wall time,
and each figure as a ratio to "1 thread, alone" of the same run. The weights of one
thread count must not depend on the wait policy (the benchmark fails otherwise):
the policy only changes how idle threads wait, never the arithmetic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {"1 thread": (1, None), "2 threads": (2, None), "2 threads, PASSIVE": (2, "PASSIVE")}


def worker(steps: int, threads: int) -> None:
    import torch

    from cvrepro.learning.models import DETECTION_BUILDERS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DETECTION_BUILDERS["fcos_tiny"]({"widths": [16, 32, 64, 96], "fpn_channels": 64}, 4, 128)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(8)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 120.0, 70.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(8)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    print(json.dumps({"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0, "sha256": digest}))


def run_one(steps: int, threads: int, policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--worker", str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for condition in ("alone", "loaded"):
            load = [busy() for _ in range(args.load)] if condition == "loaded" else []
            try:
                for name, (threads, policy) in SETTINGS.items():
                    results.setdefault((condition, name), []).append(run_one(args.steps, threads, policy))
            finally:
                for p in load:
                    p.kill()
                    p.wait()
    for threads in (1, 2):
        shas = {res["sha256"] for (c, name), runs in results.items() for res in runs if SETTINGS[name][0] == threads}
        if len(shas) != 1:
            print(f"FAIL: {threads} thread(s) gave different weights across policies/conditions: {shas}")
            return 1
    base = statistics.median(r["wall"] for r in results[("alone", "1 thread")])
    rows = []
    for (condition, name), runs in results.items():
        walls = [r["wall"] for r in runs]
        rows.append({"condition": condition, "setting": name, "median_s": round(statistics.median(walls), 2),
                     "worst_s": round(max(walls), 2), "median_cpu_s": round(statistics.median(r["cpu"] for r in runs), 2),
                     "median_ratio": round(statistics.median(walls) / base, 2), "worst_ratio": round(max(walls) / base, 2)})
    if not args.json:
        print(f"threads benchmark: fcos_tiny, {args.steps} steps of batch 8 at 128 px, {args.repeat} runs each, "
              f"cpus={os.cpu_count()}, load={args.load} busy processes; ratios against '1 thread, alone'")
        print(f"  {'condition':8} {'setting':20} {'median s':>9} {'worst s':>8} {'cpu s':>7} {'median x':>9} {'worst x':>8}")
        for row in rows:
            print(f"  {row['condition']:8} {row['setting']:20} {row['median_s']:9.2f} {row['worst_s']:8.2f} "
                  f"{row['median_cpu_s']:7.2f} {row['median_ratio']:9.2f} {row['worst_ratio']:8.2f}")
        print("  weights: identical across wait policies and load for each thread count")
    print(json.dumps({"benchmark": "threads", "steps": args.steps, "repeat": args.repeat, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
