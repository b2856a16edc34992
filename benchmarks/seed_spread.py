"""The spread of the evaluation metrics over training seeds: what `cvrepro reproduce` may accept on
other hardware (`evaluate.reproduce_tolerance_other_hardware`).

    .venv/bin/python benchmarks/seed_spread.py [--images N] [--epochs E] [--seeds S] [--threads T]
                                               [--device D] [--json]

Other hardware (another CPU kernel level, a GPU, another precision) changes the order of every sum,
so a rebuild there is a run with different rounding from the first step on: its metrics drift about
as far as a run with another seed does. This lays down the demo, runs the real data stages once, then
`cvrepro train` + `cvrepro evaluate` once per train.seed 0..S-1 and prints, per headline metric, the
mean, the standard deviation and the range (max - min). The tolerance to set is about the range, or
3 standard deviations, whichever is larger (README, "Reproduce on other hardware").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
CONF = Path(__file__).resolve().parents[1] / "conf"


def run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"seed_spread: {' '.join(args)} failed:\n{res.stderr[-2000:]}")


def headline(metrics: dict) -> dict[str, float]:
    """val/test metrics of the top level (no per-class or per-slice entries), numbers only."""
    return {f"{split}.{k}": v for split in ("val", "test") for k, v in (metrics.get(split) or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from cvrepro.config.compose import compose, dump

    per_seed = []
    with tempfile.TemporaryDirectory(prefix="cvrepro-seed-spread-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        run([str(BIN / "cvrepro"), "demo", "--images", str(args.images), "--root", str(base)], base)
        over = [f"train.epochs={args.epochs}", f"train.threads={args.threads}", f"train.device={args.device}"]
        (base / "params.yaml").write_text(dump(compose(CONF, over)))
        for stage in ("snapshot", "split", "preprocess"):
            run([str(BIN / "cvrepro"), stage], base)
        for seed in range(args.seeds):
            work = Path(tmp) / f"seed{seed}"
            shutil.copytree(base, work)
            (work / "params.yaml").write_text(dump(compose(CONF, over + [f"train.seed={seed}"])))
            run([str(BIN / "cvrepro"), "train"], work)
            run([str(BIN / "cvrepro"), "evaluate"], work)
            per_seed.append(headline(json.loads((work / "metrics/metrics.json").read_text())))
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_seed[-1].items())
                                              if k.startswith("val.")), file=sys.stderr, flush=True)
    rows = {}
    for name in sorted(per_seed[0]):
        values = [s[name] for s in per_seed]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        rows[name] = {"mean": round(statistics.mean(values), 4), "sd": round(sd, 4),
                      "range": round(max(values) - min(values), 4), "suggested": round(max(3 * sd, max(values) - min(values)), 3)}
    if args.json:
        print(json.dumps({"args": vars(args), "metrics": rows}))
        return 0
    print(f"seed spread: demo {args.images} scenes, {args.epochs} epochs, seeds 0..{args.seeds - 1}, "
          f"threads {args.threads}, device {args.device}")
    print(f"  {'metric':16} {'mean':>7} {'sd':>7} {'range':>7} {'max(3sd, range)':>16}")
    for name, r in rows.items():
        print(f"  {name:16} {r['mean']:7.3f} {r['sd']:7.4f} {r['range']:7.4f} {r['suggested']:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
