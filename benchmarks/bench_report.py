"""How long `cvrepro report` takes on a registry of many versions, against `cvrepro ls` on the same repo.

Builds a synthetic git repository (temporary, removed afterwards) with --datasets DS-x.y.z and
--models vX.Y.Z annotated release tags, each commit holding a realistic record (metrics per split,
per class and per slice, a changelog), and for each model a model card, a 30 KB prediction grid PNG
and a PR-curve CSV. Then times, interleaved, best of --repeat:
  (a) baseline: `registry.entries` (what `cvrepro ls --json` runs: every record read at its tag);
  (b) `report.build` into a temporary folder (everything the site shows, all pages written).
Prints seconds, ms per version and the ratio (b)/(a); `--json` prints only the JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cvrepro.provenance import modelcard, registry, report  # the venv's cvrepro (`pip install -e .`)

CLASSES = {"1": "person", "2": "cart", "3": "shelf"}


def git(root: Path, *args: str, input: str | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, input=input, env=env)


def split_metrics(rng: random.Random, level: float) -> dict:
    v = lambda: round(min(1.0, max(0.0, level + rng.uniform(-0.08, 0.08))), 4)  # noqa: E731
    return {"AP": v() - 0.3, "AP50": v(), "AP75": v() - 0.2, "AR100": v(), "latency_ms": 12.0,
            "per_class": {c: {"AP": v() - 0.3, "AP50": v(), "AP75": v() - 0.2} for c in CLASSES.values()},
            "time_of_day": {s: {"AP": v() - 0.3, "AP50": v(), "AP75": v() - 0.2, "images": 40} for s in ("day", "night")}}


def changelog(rng: random.Random, added: int) -> dict:
    return {"required_bump": "minor", "reason": f"{added} images added",
            "images": {"added": [f"img_{rng.randrange(10**6):06d}.png" for _ in range(added)], "removed": [],
                       "modified": [], "attributes_changed": []},
            "labels": {"boxes": {"added": added * 2, "removed": 0, "moved": 0, "relabelled": 0}, "changes": []},
            "per_class_delta": {c: added for c in CLASSES.values()}, "split_changes": [],
            "class_map": {"added": [], "removed": [], "renamed": []}, "schema_changed": False}


def picture(rng: random.Random) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (96, 96), rng.randbytes(96 * 96 * 3)).save(buf, format="PNG")
    return buf.getvalue()


def build_repo(root: Path, datasets: int, models: int, seed: int) -> None:
    rng = random.Random(seed)
    git(root, "init", "-q", "-b", "main")
    for d in ("data/releases", "models/releases", "metrics/plots"):
        (root / d).mkdir(parents=True)
    ds_tags = [f"DS-0.{i + 1}.0" for i in range(datasets)]
    per_ds = max(1, models // max(datasets, 1))
    order = []
    for i, ds in enumerate(ds_tags):
        order.append(("dataset", ds, i))
        order += [("model", None, i)] * per_ds
    order += [("model", None, datasets - 1)] * (models - per_ds * datasets)
    m = 0
    for kind, tag, i in order:
        if kind == "dataset":
            images = 800 + 40 * i
            record = {"schema": "cvrepro.release.dataset/1", "version": tag, "previous": ds_tags[i - 1] if i else None,
                      "bump": "minor", "created_utc": "2026-01-01T00:00:00Z", "source_commit": "0" * 40,
                      "task": "detection", "snapshot_id": f"sha256:{rng.getrandbits(256):064x}", "class_map": CLASSES,
                      "stats": {"images": images, "objects": images * 2, "per_class": {c: images for c in CLASSES.values()}},
                      "split": {"method": "hash", "seed": 42, "counts": {"train": 560, "val": 160, "test": 80}},
                      "changelog": changelog(rng, 40) if i else None, "notes": ""}
        else:
            m += 1
            tag = f"v0.{m}.0"
            record = {"schema": "cvrepro.release.model/1", "version": tag, "previous": f"v0.{m - 1}.0" if m > 1 else None,
                      "bump": "minor", "bump_reason": "data changed", "created_utc": "2026-01-01T00:00:00Z",
                      "source_commit": "0" * 40, "dataset_version": ds_tags[i], "snapshot_id": "sha256:" + "1" * 64,
                      "config_id": f"C-01+{m:08x}", "params": {"task": "detection", "preprocess": {"size": 128}},
                      "architecture": {"name": "fcos_tiny", "parameters": 636665, "fingerprint": "f" * 16},
                      "class_map": CLASSES, "metrics": {s: split_metrics(rng, 0.5 + 0.4 * m / models) for s in ("val", "test")},
                      "artifacts": {"models/model.pt": "a" * 64}, "seeds": {"split": 42, "train": 0},
                      "lineage": {"environment": {"machine": "x86_64", "platform": "Linux", "torch": "2.14.1"}},
                      "caveats": ["synthetic"], "notes": "",
                      "export": {"opset": 17, "batch": 1, "parity": {"images": 64, "max_score_diff": 1e-6, "ok": True},
                                 "input_spec": {"dtype": "uint8", "shape": [1, 3, 128, 128], "layout": "NCHW, RGB",
                                                "resize": "stretch", "in_graph": "/ 255, (x - mean) / std"},
                                 "output_spec": {"boxes": "xyxy", "scores": "confidence", "labels": "ids"},
                                 "files": {f"models/releases/{tag}/model.onnx": "b" * 64}}}
            (root / "models/releases" / tag).mkdir()
            (root / "models/releases" / tag / "model_card.md").write_text(modelcard.render(record, None, None))
            (root / "metrics/plots/predictions_val.png").write_bytes(picture(rng))
            (root / "metrics/plots/pr_val.csv").write_text(
                "class,recall,precision\n" + "".join(f"{name},{r / 100:.2f},{1 - r / (100 * k):.4f}\n"
                                                      for name, k in (("person", 1.5), ("cart", 2), ("shelf", 3))
                                                      for r in range(101)))
        path = root / registry.record_path(tag)
        path.write_text(json.dumps(record, indent=2))
        git(root, "add", "-A")
        git(root, "commit", "-qm", f"Release {tag}")
        git(root, "tag", "-a", tag, "-m", f"# {tag}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=20)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        root = work / "repo"
        root.mkdir()
        t0 = time.perf_counter()
        build_repo(root, args.datasets, args.models, args.seed)
        setup = time.perf_counter() - t0
        ls_times, report_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = registry.entries(root)
            ls_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            done = report.build(root, work / "site")
            report_times.append(time.perf_counter() - t)
        versions = args.datasets + args.models
        assert len(rows) == versions and done["pages"] == versions + 1, (len(rows), done)
        size = sum(f.stat().st_size for f in (work / "site").rglob("*") if f.is_file())
        result = {"bench": "report", "datasets": args.datasets, "models": args.models,
                  "ls_s": round(min(ls_times), 3), "report_s": round(min(report_times), 3),
                  "report_ms_per_version": round(min(report_times) / versions * 1000, 2),
                  "ratio_report_over_ls": round(min(report_times) / min(ls_times), 3),
                  "site_mb": round(size / 1e6, 2), "index_kb": round((work / "site/index.html").stat().st_size / 1e3, 1)}
        if not args.json:
            print(f"synthetic repo: {args.datasets} dataset + {args.models} model releases, built in {setup:.1f} s")
            print(f"(a) cvrepro ls (registry.entries): {result['ls_s']:.3f} s")
            print(f"(b) cvrepro report:                {result['report_s']:.3f} s "
                  f"({result['report_ms_per_version']} ms per version, site {result['site_mb']} MB, "
                  f"index.html {result['index_kb']} KB)")
            print(f"ratio (b)/(a): {result['ratio_report_over_ls']}")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
