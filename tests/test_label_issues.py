"""`cvrepro label-issues`: the scoring of each task on synthetic predictions (fast), the CSV that `labels
apply` takes as it is, and (slow) known mistakes injected into the demo found by k-fold predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvrepro import tasks
from cvrepro.cli import main
from cvrepro.dataset.corrections import apply_corrections, read_rows
from cvrepro.learning.label_issues import FIELDS, folds, rank, write_csv
from cvrepro.tasks.issue_rows import _row
from cvrepro.tasks.issues import box_iou, confident_learning, detection_issues, mask_disagreement

from helpers import TINY_OVERRIDES, tiny_params
from helpers.cpu import TEST_CPU_ISA
from helpers.label_errors import flip_labels, inject_detection_errors, measure

BOX = [20.0, 20.0, 60.0, 50.0]  # xyxy, 40 x 30
# (precision@K, recall@2K) measured at 160 scenes minus 0.2: removed 0.9/0.9, swapped 0.75/0.75, shifted 0.8/0.9,
# background 0.5/0.9 (the demo's sizes: docs/label-issues.md)
DETECTION_FLOOR = {"removed": (0.7, 0.75), "swapped": (0.55, 0.55), "shifted": (0.6, 0.7), "background": (0.3, 0.7)}
CLASSIFICATION_FLOOR = {"precision_at_k": 0.5, "recall_at_2k": 0.7}  # measured 0.7, 0.9 (200 images), minus 0.2


def _one(gt_labels, pred_boxes, pred_scores, pred_labels, gt_boxes=(BOX,)):
    gt = {"boxes": np.array(gt_boxes, float).reshape(-1, 4), "labels": np.array(gt_labels)}
    pred = {"boxes": np.array(pred_boxes, float).reshape(-1, 4), "scores": np.array(pred_scores, float),
            "labels": np.array(pred_labels)}
    return detection_issues(gt, pred)


def test_a_box_the_model_finds_is_no_issue_even_weakly():
    assert _one([1], [[21, 20, 61, 50]], [0.9], [1]) == []
    assert _one([1], [[21, 20, 61, 50]], [0.55], [1]) == []
    (issue,) = _one([1], [[21, 20, 61, 50]], [0.2], [1])
    assert issue["reason"] == "spurious" and issue["score"] == pytest.approx(0.8)


def test_a_box_the_model_sees_as_another_class_is_a_wrong_class():
    (issue,) = _one([1], [[21, 20, 61, 50], [20, 21, 60, 50]], [0.9, 0.1], [2, 1])
    assert issue["reason"] == "wrong_class" and issue["category"] == 2 and issue["gt"] == 0
    assert issue["score"] == pytest.approx(0.9 * (1 - 0.1))


def test_a_box_shifted_by_half_its_size_is_misplaced_with_the_model_s_box_as_the_fix():
    true_place = [40, 20, 80, 50]  # the labelled box is 20 px (50% of its width) to the left
    (issue,) = _one([1], [true_place], [0.8], [1])
    assert issue["reason"] == "misplaced" and issue["box"] == true_place and issue["score"] > 0.4


def test_a_box_on_nothing_is_spurious_and_a_confident_box_without_label_is_missing():
    issues = _one([3], [[100, 60, 130, 90], [101, 60, 131, 91]], [0.7, 0.4], [2, 1])
    reasons = {i["reason"]: i for i in issues}
    assert reasons["spurious"]["score"] == 1.0 and reasons["spurious"]["gt"] == 0
    assert reasons["missing"]["category"] == 2 and reasons["missing"]["score"] == 0.7
    assert len(issues) == 2  # the weaker prediction of the same object is no second missing box


def test_an_image_without_boxes_or_predictions():
    assert _one([], [], [], [], gt_boxes=()) == []
    assert box_iou(np.zeros((0, 4)), np.zeros((2, 4))).shape == (0, 2)


def test_confident_learning_finds_flipped_labels_first():
    rng = np.random.default_rng(0)
    true = rng.integers(1, 4, size=300)  # ids 1..3; column 0 is a head's unused output
    probs = np.full((300, 4), 0.02)
    probs[np.arange(300), true] = rng.uniform(0.5, 0.95, size=300)
    probs[:, 0] = 0.3  # an unused id is no class, however high
    given = true.copy()
    flipped = rng.choice(300, size=15, replace=False)
    given[flipped] = np.where(true[flipped] == 3, 1, true[flipped] + 1)
    found = confident_learning(probs, given, [1, 2, 3])
    assert {r["index"] for r in found[:15]} == set(flipped.tolist())
    assert all(found[i]["score"] >= found[i + 1]["score"] for i in range(len(found) - 1))
    assert {r["category"] for r in found if r["index"] == flipped[0]} == {int(true[flipped[0]])}


def test_mask_disagreement_leaves_ignored_pixels_out():
    gt = np.array([[1, 1], [0, 255]])
    assert mask_disagreement(gt, np.array([[1, 2], [0, 2]]), 255) == pytest.approx(1 / 3)
    assert mask_disagreement(np.full((2, 2), 255), np.zeros((2, 2)), 255) == 0.0


def test_folds_are_disjoint_cover_everything_and_are_seeded():
    parts = folds(23, 4, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(23))
    assert [p.tolist() for p in parts] == [p.tolist() for p in folds(23, 4, seed=0)]
    assert [p.tolist() for p in parts] != [p.tolist() for p in folds(23, 4, seed=1)]


def test_rank_interleaves_the_kinds_by_score_and_drops_the_weak():
    issues = [{"score": s, "reason": r, "n": i} for i, (s, r) in
              enumerate([(0.2, "a"), (0.9, "a"), (0.01, "a"), (0.95, "a"), (0.4, "b"), (0.5, "b")])]
    assert [i["n"] for i in rank(issues, 0.05)] == [3, 5, 1, 4, 0]


def _coco() -> dict:
    return {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cart"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400},
                            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [50, 10, 20, 20], "area": 400},
                            {"id": 9, "image_id": 1, "category_id": 2, "bbox": [10, 40, 20, 20], "area": 400}]}


def test_labels_apply_takes_the_rows_as_they_are(tmp_path: Path):
    rows = [_row("a.png", None, "missing", "cart", [60.0, 40.0, 30.0, 25.5], 0.9),
            _row("a.png", 7, "spurious", "person", None, 1.0),
            _row("a.png", 8, "wrong_class", "cart", None, 0.8),
            _row("a.png", 9, "misplaced", "cart", [12.0, 41.0, 20.0, 20.0], 0.5)]
    path = tmp_path / "issues.csv"
    write_csv(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(FIELDS)
    new, summary = apply_corrections(_coco(), read_rows(path), path, task=tasks.get("detection"), labels_path=tmp_path / "x")
    assert summary["actions"] == {"relabel": 1, "move": 1, "delete": 1, "add": 1}
    by_id = {a["id"]: a for a in new["annotations"]}
    assert 7 not in by_id and by_id[8]["category_id"] == 2 and by_id[9]["bbox"] == [12.0, 41.0, 20.0, 20.0]
    assert by_id[10]["bbox"] == [60.0, 40.0, 30.0, 25.5] and by_id[10]["category_id"] == 2


def test_labels_apply_ignores_other_columns_but_still_wants_the_eight(tmp_path: Path):
    path = tmp_path / "fix.csv"
    path.write_text("note,image,annotation_id,action,category,x,y,w,h,score\nlooks off,a.png,8,relabel,cart,,,,,0.5\n")
    new, _ = apply_corrections(_coco(), read_rows(path), path, task=tasks.get("detection"), labels_path=tmp_path / "x")
    assert {a["id"]: a["category_id"] for a in new["annotations"]}[8] == 2
    path.write_text("image,annotation_id,action,category,x,y,w,score\n")
    with pytest.raises(Exception, match="fix.csv:1: .*missing h"):
        apply_corrections(_coco(), read_rows(path), path, task=tasks.get("detection"), labels_path=tmp_path / "x")


def test_injection_is_seeded_and_as_asked():
    coco = {"images": [{"id": i, "file_name": f"{i}.png", "width": 160, "height": 120} for i in range(1, 41)],
            "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 3, "bbox": [30, 30, 40, 30]}
                            for i in range(1, 41)]}
    new, truth = inject_detection_errors(coco, 0.05, seed=1)
    assert {k: len(v) for k, v in truth.items()} == {"removed": 2, "swapped": 2, "shifted": 2, "background": 2}
    assert (new, truth) == inject_detection_errors(coco, 0.05, seed=1)
    by_id = {a["id"]: a for a in new["annotations"]}
    for aid in truth["shifted"]:
        dx, dy = abs(by_id[aid]["bbox"][0] - 30) / 40, abs(by_id[aid]["bbox"][1] - 30) / 30
        assert 0.35 <= max(dx, dy) <= 0.6 and min(dx, dy) == 0
    flipped_index, flipped = flip_labels(coco, 0.1, seed=0)
    assert len(flipped) == 4 and all(
        a["category_id"] != coco["annotations"][a["id"] - 1]["category_id"]
        for a in flipped_index["annotations"] if a["id"] in flipped)


def test_the_command_has_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["label-issues", "--help"])
    assert done.value.code == 0 and "--mode {heldout,kfold}" in capsys.readouterr().out


# --------------------------------------------------------------------------- slow: real training and prediction


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "classification", "segmentation"])
def test_heldout_run_writes_a_csv_labels_apply_takes_and_a_sheet(task: str, tmp_path: Path, monkeypatch):
    import subprocess

    from cvrepro.config.compose import compose
    from cvrepro.core.fileio import read_json
    from cvrepro.dataset.index import annotations_file
    from cvrepro.learning import label_issues
    from cvrepro.stages import train

    from helpers import REPO, prepared_data, write_params

    params = compose(REPO / "conf", TINY_OVERRIDES + [f"task={task}", "label_issues.min_score=0"])
    root = prepared_data(tmp_path / "p", params, n_images=40)
    monkeypatch.chdir(root)
    subprocess.run("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm d", shell=True,
                   check=True, stdout=subprocess.DEVNULL)
    write_params(root, params)
    train.run(params, root)
    before = (root / annotations_file(params)).read_bytes()
    assert main(["label-issues", "--json"]) == 0
    out = root / label_issues.OUT_DIR
    summary = read_json(out / label_issues.SUMMARY_NAME)
    assert summary["mode"] == "heldout" and summary["splits"] == ["test", "val"] and summary["issues"] > 0
    assert (out / label_issues.SHEET_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / annotations_file(params)).read_bytes() == before  # raw labels untouched
    rows = (out / label_issues.CSV_NAME).read_text().splitlines()
    assert rows[0] == ",".join(FIELDS) and len(rows) == summary["issues"] + 1
    if task == "segmentation":  # labels apply does not edit masks
        return
    labels_path = root / annotations_file(params)
    assert main(["labels", "apply", str(out / label_issues.CSV_NAME), "--annotations", str(labels_path),
                 "--task", task, "--dry-run"]) == 0


SLOW_OVERRIDES = ["train.threads=1", f"train.cpu_isa={TEST_CPU_ISA}", "label_issues=kfold", "label_issues.k=3"]


@pytest.mark.slow
def test_kfold_finds_flipped_classification_labels(tmp_path: Path):
    # 200 images, 5% flipped (10), k = 3 fold models of the task's 12 epochs (about 1 minute on one thread).
    # Measured: see docs/label-issues.md; asserted here with a margin of 0.2.
    result = measure(tmp_path, "classification", 200, SLOW_OVERRIDES)
    scores = result["scores"]["flipped"]
    print(json.dumps({k: v for k, v in result.items() if k in ("scores", "seconds")}))
    assert scores["precision_at_k"] >= CLASSIFICATION_FLOOR["precision_at_k"], scores
    assert scores["recall_at_2k"] >= CLASSIFICATION_FLOOR["recall_at_2k"], scores


@pytest.mark.slow
def test_kfold_finds_injected_detection_mistakes(tmp_path: Path):
    # 160 demo scenes, 5% of the boxes each removed, relabelled, shifted and added on background; k = 3 fold
    # models of the demo's 12 epochs (a few minutes on one thread). Ranked within each kind's reason.
    result = measure(tmp_path, "detection", 160, SLOW_OVERRIDES)
    print(json.dumps({k: v for k, v in result.items() if k in ("scores", "seconds")}))
    for kind, floor in DETECTION_FLOOR.items():
        scores = result["scores"][kind]
        assert scores["precision_at_k"] >= floor[0] and scores["recall_at_2k"] >= floor[1], (kind, scores)


def test_a_bad_mode_or_k_is_one_clear_error(tmp_path: Path):
    from cvrepro.core.fileio import CvreproError
    from cvrepro.learning.label_issues import run

    params = tiny_params()
    with pytest.raises(CvreproError, match="label_issues.mode must be one of heldout, kfold, got 'all'"):
        run({**params, "label_issues": {**params["label_issues"], "mode": "all"}}, tmp_path)
    with pytest.raises(CvreproError, match="label_issues is missing"):
        run({k: v for k, v in params.items() if k != "label_issues"}, tmp_path)
    with pytest.raises(CvreproError, match="label_issues.k must be at least 2"):
        folds(10, 1, seed=0)
