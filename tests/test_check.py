"""`cvrepro check` (issue 20.4/20.6): each health finding on a built dataset, the JSON and the picture
sheet, thresholds from conf/ (and out of the config ID), duplicates taken from the manifest, the report
site's health columns, and `release dataset` refusing (strict) or warning (warn) on a leaking pair."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvrepro.core.paths import LABEL_ISSUES
from cvrepro.cli import main
from cvrepro.config.compose import compose
from cvrepro.config.params import config_id
from cvrepro.config.schema import Check
from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset import health
from cvrepro.provenance import check, report
from cvrepro.stages import snapshot, split

from helpers import REPO, commit_all, copy_template, edit, run, tiny_conf, write_params
from helpers.health import make_unhealthy

SUBSET = ["split=subset"]


@pytest.fixture(scope="module")
def sick(tmp_path_factory) -> tuple[Path, dict]:
    """The unhealthy demo through snapshot and split (split.method subset: the copy of image 7 in test)."""
    root = tmp_path_factory.mktemp("sick")
    facts = make_unhealthy(root)
    params = compose(REPO / "conf", SUBSET)
    write_params(root, params)
    snapshot.run(params, root)
    split.run(params, root)
    return root, facts


def gathered(root: Path, overrides: list[str] = ()) -> dict:
    params = compose(REPO / "conf", SUBSET + list(overrides))
    return check.gather(*check.load_workspace(root, params), check.settings(params), root)


def paths(finding: dict, key: str = "path") -> set:
    return {it[key] for it in finding["items"]}


def test_each_finding_on_a_built_dataset(sick):
    root, facts = sick
    f = gathered(root)["findings"]
    names = facts["names"]
    assert f["near_identical_boxes"]["count"] == 1 and paths(f["near_identical_boxes"]) == {names[1]}
    assert f["near_identical_boxes"]["items"][0]["iou"] > 0.9
    assert paths(f["tiny_boxes"]) == {names[2]} and f["tiny_boxes"]["items"][0]["bbox"] == [10.0, 10.0, 1.0, 1.0]
    assert paths(f["huge_boxes"]) == {names[3]}
    assert paths(f["aspect_outliers"]) == {names[4]} and f["aspect_outliers"]["items"][0]["aspect"] == 15.0
    assert paths(f["boxes_per_image"]) == {names[5]} and f["boxes_per_image"]["items"][0]["boxes"] >= 40
    assert paths(f["unlabeled_images"]) == {names[6]}
    dup = f["duplicates"]
    assert dup["count"] == 2 and dup["source"] == "manifest" and dup["exact"] == 2 and dup["images"] == 2
    assert {tuple(it["members"]) for it in dup["items"]} == {tuple(sorted(facts["leak"])), tuple(sorted(facts["conflict"]))}
    (leak,) = f["leakage"]["items"]
    assert {leak["a"], leak["b"]} == set(facts["leak"]) and sorted(leak["splits"]) == ["test", "train"]
    assert f["leakage"]["level"] == "error"
    (conflict,) = f["label_conflicts"]["items"]  # the leaking copy carries the same boxes: no conflict
    assert {conflict["a"], conflict["b"]} == set(facts["conflict"])
    assert f["class_imbalance"]["count"] == 0 and f["class_imbalance"]["level"] == "ok"
    params = compose(REPO / "conf", SUBSET)
    manifest, index, splits = check.load_workspace(root, params)
    stale = check.gather(manifest, index, {**splits, "snapshot_id": "sha256:other"}, check.settings(params))
    assert "leakage" not in stale["findings"] and not stale["splits_checked"]
    assert "leakage not checked" in check.render_text(stale)


def test_json_output_and_exit_codes(sick, capsys):
    root, facts = sick
    assert main(["check", "--root", str(root), "--json"]) == 0  # policy warn: findings, exit 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "cvrepro.check/1" and out["task"] == "detection" and out["policy"] == "warn"
    assert out["findings"]["leakage"]["count"] == 1 and len(out["blocking"]) == 2
    assert any(facts["leak"][0] in line and facts["leak"][1] in line for line in out["blocking"])
    assert main(["check", "--root", str(root), "--policy", "strict"]) == 1
    text = capsys.readouterr().out
    assert "FAIL leakage: 1 pairs" in text and "WARN tiny_boxes" in text and "ok   class_imbalance" in text


def test_sheet_draws_the_worst_cases(sick, tmp_path, capsys):
    root, _ = sick
    out = tmp_path / "sheet.png"
    assert main(["check", "--root", str(root), "--sheet", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
    assert check.sheet_cases(gathered(root), 16)[0]["title"].startswith("leakage")


def test_thresholds_come_from_conf_and_stay_out_of_the_config_id(sick):
    root, _ = sick
    f = gathered(root, ["check.imbalance_ratio=1.0", "check.aspect_max=20", "check.near_identical_iou=0.999"])
    assert f["findings"]["class_imbalance"]["count"] == 1 and f["findings"]["class_imbalance"]["level"] == "warn"
    assert f["findings"]["aspect_outliers"]["count"] == 0 and f["findings"]["near_identical_boxes"]["count"] == 0
    assert f["thresholds"]["aspect_max"] == 20
    base = compose(REPO / "conf")
    assert base["check"] == dataclasses.asdict(Check())  # conf/check's defaults are the schema's
    assert config_id(compose(REPO / "conf", ["check.policy=strict", "check.aspect_max=3"])) == config_id(base)
    assert config_id(compose(REPO / "conf", ["train.lr=0.02"])) != config_id(base)


def test_bad_policy_and_missing_manifest_are_one_line_errors(tmp_path, capsys):
    base = compose(REPO / "conf")
    with pytest.raises(CvreproError, match="params.yaml: check.policy must be one of warn, strict"):
        check.settings({**base, "check": {**base["check"], "policy": "loud"}})
    with pytest.raises(CvreproError, match=r"check.tiny_box_area must be a number >= 0"):
        check.settings({**base, "check": {**base["check"], "tiny_box_area": "small"}})
    with pytest.raises(CvreproError, match="--policy must be one of warn, strict"):
        check.settings(base, "loud")
    write_params(tmp_path, compose(REPO / "conf"))
    assert main(["check", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data/snapshot/manifest.json: not found" in err


def test_settings_are_the_typed_check_group():
    """A params.yaml composed before conf/check existed takes the schema's defaults; --policy wins over the file."""
    base = compose(REPO / "conf", ["check.aspect_max=20"])
    assert check.settings(base) == Check(aspect_max=20.0)
    assert check.settings({k: v for k, v in base.items() if k != "check"}) == Check()
    assert check.settings(base, "strict") == Check(aspect_max=20.0, policy="strict")
    assert check.settings(typed(base), "strict").policy == "strict"


def test_duplicate_groups_from_the_manifest_win_over_md5():
    files = [{"path": p, "image_id": i, "md5": "same", "objects": 1, "width": 10, "height": 10, "labels_hash": "x"}
             for i, p in enumerate(("a.png", "b.png", "c.png"), 1)]
    manifest = {"files": files, "duplicates": {"groups": [
        {"members": ["a.png", "c.png"], "kind": "near", "distance": 3, "conflicts": [["a.png", "c.png"]]}]}}
    source, groups = health.duplicate_groups(manifest)
    assert source == "manifest" and len(groups) == 1
    leaks = health.leaks(groups, {"a.png": "train", "b.png": "train", "c.png": "val"}, 10)
    assert leaks["items"] == [{"a": "a.png", "b": "c.png", "splits": ["train", "val"], "kind": "near"}]
    conflicts = health.conflicts(groups, lambda p: None, 10)
    assert conflicts["count"] == 1 and conflicts["items"][0]["kind"] == "near"
    fallback = health.duplicate_groups({"files": files})
    assert fallback[0] == "md5" and fallback[1][0]["members"] == ["a.png", "b.png", "c.png"]


def test_near_identical_pairs_match_every_pair_compared():
    rng = np.random.default_rng(0)
    files = [{"path": f"{i}.png", "image_id": i, "width": 100, "height": 100} for i in range(1, 21)]
    anns = []
    for k in range(600):
        x, y = rng.uniform(0, 80, 2)
        anns.append({"image_id": int(rng.integers(1, 21)), "category_id": int(rng.integers(1, 3)),
                     "bbox": [x, y, 10 + rng.uniform(0, 1), 10 + rng.uniform(0, 1)]})
        if k % 7 == 0:
            anns.append({**anns[-1], "bbox": [x + rng.uniform(0, 0.3), y, 10.0, 10.0]})
    b = health.Boxes(files, anns)
    found = health.near_identical(b, {}, Check(near_identical_iou=0.9, max_items=10 ** 6))
    brute = 0
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            if b.image[i] != b.image[j] or b.category[i] != b.category[j]:
                continue
            iw = min(b.x[i] + b.w[i], b.x[j] + b.w[j]) - max(b.x[i], b.x[j])
            ih = min(b.y[i] + b.h[i], b.y[j] + b.h[j]) - max(b.y[i], b.y[j])
            inter = max(iw, 0) * max(ih, 0)
            brute += inter / (b.w[i] * b.h[i] + b.w[j] * b.h[j] - inter) > 0.9
    assert found["count"] == brute > 20


def test_report_shows_health_duplicates_and_label_issues(tmp_path):
    root = tmp_path / "repo"
    (root / "data/releases").mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], root)
    base = {"schema": "cvrepro.release.dataset/1", "bump": "minor", "created_utc": "2026-01-01T00:00:00Z",
            "source_commit": "0" * 40, "task": "detection", "snapshot_id": "sha256:0", "class_map": {"1": "a"},
            "stats": {"images": 3, "objects": 3, "per_class": {"a": 3}}, "split": {}, "changelog": None, "notes": ""}
    health_summary = {"policy": "warn", "counts": {"leakage": 1, "duplicates": 2}, "warnings": 1, "errors": 1,
                      "duplicates": {"groups": 2, "exact": 2, "near": 0, "images": 2, "source": "md5"},
                      "blocking": ["leakage: a.png = b.png (train / test)"]}
    for tag, extra in (("DS-0.1.0", {}), ("DS-0.2.0", {"health": health_summary, "previous": "DS-0.1.0"})):
        (root / f"data/releases/{tag}.json").write_text(json.dumps({**base, "version": tag, "previous": None, **extra}))
        if tag == "DS-0.2.0":
            (root / LABEL_ISSUES).parent.mkdir(parents=True, exist_ok=True)  # what `cvrepro label-issues` writes
            (root / LABEL_ISSUES).write_text("image,annotation_id,issue\na.png,1,x\nb.png,2,y\n")
        commit_all(root, tag)
        run(["git", "tag", "-a", tag, "-m", tag], root)
    report.build(root, tmp_path / "site")
    index = (tmp_path / "site/index.html").read_text()
    assert "<th>health</th><th>duplicates</th><th>label issues</th>" in index
    datasets = index[index.index("id='datasets'"):index.index("id='models'")]
    rows = {r.split("</a>")[0].rsplit(">", 1)[-1]: r for r in datasets.split("<tr>")[2:]}
    row, old = rows["DS-0.2.0"], rows["DS-0.1.0"]
    assert "1 errors, 1 warnings" in row and "<td class='n'>2</td><td class='n'>2</td>" in row
    assert "<td></td><td></td><td class='n'></td>" in old  # released before checks and issue lists: blank
    page = (tmp_path / "site/datasets/DS-0.2.0.html").read_text()
    assert "<h2>Health</h2>" in page and "a.png = b.png" in page


# --------------------------------------------------------------------------- release (real git and DVC)


def _leaking_project(root: Path, policy: str) -> Path:
    copy_template(root)
    tiny_conf(root)
    edit(root / "conf/config.yaml", "  - split: hash", "  - split: subset")
    edit(root / "conf/check/default.yaml", "policy: warn", f"policy: {policy}")
    run(["cvrepro", "compose", "--force"], root)
    run(["dvc", "remote", "add", "--local", "-d", "tmp", str(root.parent / f"{root.name}.remote")], root)
    make_unhealthy(root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    commit_all(root, "unhealthy data")
    run(["dvc", "repro", "split"], root)
    commit_all(root, "snapshot and split")
    return root


@pytest.mark.slow  # dvc repro of the data stages and a real release
def test_release_dataset_refuses_a_leak_under_strict_and_warns_under_warn(tmp_path):
    strict = _leaking_project(tmp_path / "strict", "strict")
    res = run(["cvrepro", "release", "dataset"], strict, check=False)
    assert res.returncode == 2 and "check.policy strict" in res.stderr and "copy_7.png" in res.stderr, res.stderr
    assert any("label_conflicts:" in line and "copy_8.png" in line for line in res.stderr.splitlines()), res.stderr
    assert run(["git", "tag"], strict).stdout.strip() == ""
    warn = tmp_path / "warn"
    shutil.copytree(strict, warn, symlinks=True)
    edit(warn / "conf/check/default.yaml", "policy: strict", "policy: warn")
    out = run(["dvc", "repro", "split"], warn).stdout  # compose reruns (conf/ changed); no data stage reads `check`
    assert "Running stage 'compose'" in out and "Running stage 'snapshot'" not in out, out
    commit_all(warn, "policy warn")
    res = run(["cvrepro", "release", "dataset"], warn)
    assert "warning: dataset health" in res.stderr and "copy_7.png" in res.stderr
    record = json.loads((warn / "data/releases/DS-0.1.0.json").read_text())
    assert record["health"]["counts"]["leakage"] == 1 and record["health"]["errors"] == 2
    notes = (warn / "data/releases/DS-0.1.0.md").read_text()
    assert "## Health" in notes and "copy_7.png" in notes


def test_label_signatures_ignore_annotation_ids_and_a_stale_labels_file_is_one_line():
    from cvrepro import tasks

    det, cls = tasks.get("detection"), tasks.get("classification")
    a = [{"id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}, {"id": 2, "category_id": 1, "bbox": [5, 6, 7, 8]}]
    b = [{"id": 9, "category_id": 1, "bbox": [5.0, 6.0, 7.0, 8.0]}, {"id": 7, "category_id": 2, "bbox": [1, 2, 3, 4]}]
    assert det.label_signature({}, a) == det.label_signature({}, b)
    assert det.label_signature({}, a) != det.label_signature({}, b[:1])
    assert cls.label_signature({"category_id": 3}, []) != cls.label_signature({"category_id": 2}, [])
    files = [{"path": "a.png", "image_id": 1, "width": 10, "height": 10}]
    with pytest.raises(CvreproError, match="run `dvc repro snapshot` first"):
        health.Boxes(files, [{"image_id": 1, "category_id": 1, "bbox": [1, 2]}])
