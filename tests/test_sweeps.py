"""Issue 21: sweeps are DVC's own queue. `dvc exp run --queue -S 'train.lr=a,b'` queues one experiment per value
(DVC's Hydra sweep syntax), `dvc exp run --run-all` runs them, `dvc exp show --json` compares them, and the lineage
of each run names its config ID (the ID of exactly the params that run trained with)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cvrepro.config.params import config_id
from helpers import commit_all, copy_template, run, tiny_conf

pytestmark = pytest.mark.slow  # trains two tiny models through the real DVC queue


def test_a_queued_grid_runs_and_each_result_is_in_exp_show(tmp_path: Path):
    root = copy_template(tmp_path / "project")
    tiny_conf(root, epochs=1)
    run(["cvrepro", "demo", "--images", "16", "--seed", "3"], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "demo data, tiny config")
    queued = run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.005,0.02", "-S", "train.epochs=1"], root)
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], root)  # the queue's worker, in the foreground
    rows = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    runs = [exp for row in rows for exp in (row.get("experiments") or [])]
    results = {}
    for exp in runs:
        data = exp["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]
        # lineage.json is a git-tracked output (cache: false): it is in the experiment's commit
        lineage = json.loads(run(["git", "show", f"{data['rev']}:metrics/lineage.json"], root).stdout)
        results[params["train"]["lr"]] = (params, data["metrics"]["metrics/metrics.json"]["data"], lineage)
    assert set(results) == {0.005, 0.02}, results.keys()
    for lr, (params, metrics, lineage) in results.items():
        assert params["train"]["epochs"] == 1 and "val" in metrics
        assert lineage["config_id"] == config_id(params), lr
    assert len({config_id(p) for p, _, _ in results.values()}) == 2
    # the workspace is untouched by queued runs: params.yaml is still the composition of conf/
    assert yaml.safe_load((root / "params.yaml").read_text())["train"]["lr"] == 0.01
