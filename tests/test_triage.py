"""`cvrepro diff vA vB`, the triage question: after a code change that hurts dark
images, the diff names code as the changed factor, no data change, and the night
slice as the largest regression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import commit_all, edit, released_project, run

pytestmark = pytest.mark.slow

# A plausible bug: a contrast stretch with a black point of 64, tuned on day images,
# crushes most of a night image (mean brightness about 50) to black.
CRUSH_DARK = '''
    pixels = np.asarray(im.resize((w, h), Image.BILINEAR)).astype(np.int32)
    pixels = np.clip((pixels - 64) * 255 // 191, 0, 255).astype(np.uint8).transpose(2, 0, 1)
'''


def test_code_change_that_hurts_night_images(tmp_path: Path):
    root = tmp_path / "project"
    env = {"PYTHONPATH": str(root / "src")}  # stages run this project's code, as in a real checkout
    released_project(root, images=120, seed=6, env=env)
    # Enough training for real metrics (6 epochs on 120 images: about 20 s a run on one thread).
    edit(root / "conf/experiment/smoke.yaml", "epochs: 2", "epochs: 6")
    edit(root / "conf/experiment/smoke.yaml", "warmup_iters: 5", "warmup_iters: 100")
    edit(root / "conf/train/default.yaml", "batch_size: 4", "batch_size: 8")
    run(["cvrepro", "compose", "--force"], root, env=env)
    run(["dvc", "repro"], root, env=env)
    commit_all(root, "baseline model", env)
    run(["cvrepro", "release", "model"], root, env=env)

    edit(root / "src/cvrepro/dataset/processed.py",  # fit_image: every stored image goes through it
         "    pixels = np.asarray(im.resize((w, h), Image.BILINEAR)).transpose(2, 0, 1)\n", CRUSH_DARK)
    run(["dvc", "repro"], root, env=env)
    commit_all(root, "contrast stretch in preprocess", env)
    record = json.loads(run(["cvrepro", "release", "model", "--json"], root, env=env).stdout)
    assert record["version"] == "v0.1.1" and record["bump"] == "patch", record["bump_reason"]

    t = json.loads(run(["cvrepro", "diff", "v0.1.0", "v0.1.1", "--json"], root, env=env).stdout)
    assert t["factors"] == ["code"]
    assert t["code"]["code_files"] == ["src/cvrepro/dataset/processed.py"]
    assert t["data"]["changed"] is False and t["params"] == {}
    worst = t["largest_regression"]["slice"]
    assert worst["where"].endswith("time_of_day=night"), t["regressions"][:5]
    assert t["regressions"][0]["delta"] <= worst["delta"] < 0  # regressions come largest first
    night = [r for r in t["regressions"] if r["where"] == "val time_of_day=night" and r["metric"] == "AP50"]
    day = [r for r in t["regressions"] if r["where"] == "val time_of_day=day" and r["metric"] == "AP50"]
    assert night and (not day or night[0]["delta"] < day[0]["delta"])
    text = run(["cvrepro", "diff", "v0.1.0", "v0.1.1"], root, env=env).stdout
    assert text.startswith("v0.1.0 -> v0.1.1: changed code") and "same snapshot: no data change" in text
    assert text.split(" by slice:\n")[1].splitlines()[0].split()[1] == "time_of_day=night"
