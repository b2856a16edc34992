"""Fast checks of issue 14's pieces without training: the parity comparison's verdicts, the report
over a synthetic registry (real git tags, the benchmark's generator), and the model card's weak spots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cvrepro.core.fileio import CvreproError
from cvrepro.provenance import export, modelcard, report



def benchmark(name: str):
    """A module of benchmarks/ (not a package: loaded from its file, the import path left alone)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def det(boxes, scores, labels) -> dict:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.array(scores, dtype=np.float32),
            "labels": np.array(labels, dtype=np.int64)}


def test_detection_parity_within_and_outside_the_tolerance():
    ref = [det([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.4], [1, 2])]
    close = [det([[60.1, 60, 90, 90], [10, 10.2, 50, 50]], [0.4002, 0.9], [2, 1])]  # other order, tiny differences
    assert export.compare(ref, close)["ok"]
    moved = [det([[10, 10, 52, 50], [60, 60, 90, 90]], [0.9, 0.4], [1, 2])]
    report_ = export.compare(ref, moved)
    assert not report_["ok"] and report_["max_box_diff_px"] == pytest.approx(2.0)
    missing = [det([[10, 10, 50, 50]], [0.9], [1])]
    assert export.compare(ref, missing)["unmatched_detections"] == 1 and not export.compare(ref, missing)["ok"]
    relabelled = [det([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.4], [1, 3])]
    assert not export.compare(ref, relabelled)["ok"]
    rescored = [det([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.4], [1, 2])]
    assert not export.compare(ref, rescored)["ok"]


def test_dense_parity_counts_label_agreement_and_scores():
    rng = np.random.default_rng(0)
    scores = rng.random((3, 8, 8)).astype(np.float32)
    ref = [{"scores": scores, "mask": scores.argmax(0)}]
    assert export.compare(ref, [{"scores": scores + 1e-5, "mask": scores.argmax(0)}])["ok"]
    flipped = scores.argmax(0).copy()
    flipped[0, 0] = (flipped[0, 0] + 1) % 3
    res = export.compare(ref, [{"scores": scores, "mask": flipped}])
    assert not res["ok"] and res["mask_agreement"] == pytest.approx(63 / 64)
    assert not export.compare(ref, [{"scores": scores * 0.5, "mask": scores.argmax(0)}])["ok"]


def test_model_card_names_the_worst_class_and_slice():
    metrics = {"test": {"AP50": 0.8, "per_class": {"person": {"AP50": 0.6}, "cart": {"AP50": 0.9}},
                        "time_of_day": {"day": {"AP50": 0.85, "images": 10}, "night": {"AP50": 0.7, "images": 5}}}}
    spots = modelcard.weak_spots(metrics)
    assert spots[0].startswith("Worst class on test: **person** (AP50 0.600") and "best cart 0.900" in spots[0]
    assert "**night** (AP50 0.700" in spots[1]


@pytest.fixture(scope="module")
def registry_repo(tmp_path_factory) -> Path:
    build_repo = benchmark("bench_report").build_repo

    root = tmp_path_factory.mktemp("registry") / "repo"
    root.mkdir()
    build_repo(root, datasets=2, models=4, seed=1)
    return root


def test_report_site_of_a_synthetic_registry(registry_repo: Path, tmp_path: Path):
    out = tmp_path / "site"
    done = report.build(registry_repo, out)
    assert done == {"out": str(out.resolve()), "datasets": 2, "models": 4, "pages": 7}
    index = (out / "index.html").read_text()
    for v in ("DS-0.1.0", "DS-0.2.0", "v0.1.0", "v0.4.0"):
        folder = "datasets" if v.startswith("DS") else "models"
        assert f"href='{folder}/{v}.html'" in index and (out / folder / f"{v}.html").is_file()
    assert index.count("<svg") >= 3  # overall, per slice, per class trends
    model = (out / "models/v0.4.0.html").read_text()
    assert "src='../pictures/v0.4.0-predictions_val.png'" in model and (out / "pictures/v0.4.0-predictions_val.png").is_file()
    assert "../datasets/DS-0.2.0.html" in model and "../models/v0.3.0.html" in model  # trained on, previous
    assert "Model card: v0.4.0" in model and "precision vs recall" in model
    assert "Changes since" in (out / "datasets/DS-0.2.0.html").read_text()
    assert "http://" not in index and "https://" not in index and "<script" not in index  # opens offline
    report.build(registry_repo, out)  # a second run replaces its own folder


def test_report_refuses_to_replace_a_folder_it_did_not_write(registry_repo: Path, tmp_path: Path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(CvreproError, match="is not a cvrepro report"):
        report.build(registry_repo, mine)
    assert (mine / "keep.txt").read_text() == "mine"


def test_markdown_of_a_card_escapes_html():
    html = report.markdown("# T\n\n| a | b |\n|---|---|\n| <x> | `y` |\n\n- **bold**\n")
    assert "<table>" in html and "&lt;x&gt;" in html and "<code>y</code>" in html and "<b>bold</b>" in html


def test_parity_needs_images_to_check(tmp_path: Path):
    with pytest.raises(CvreproError, match="no preprocessed image to check the ONNX export on"):
        export.parity_images(tmp_path)
    (tmp_path / "data/processed/val").mkdir(parents=True)
    np.save(tmp_path / "data/processed/val/images.npy", np.zeros((0, 3, 8, 8), np.uint8))  # an empty val split
    (tmp_path / "data/processed/test").mkdir(parents=True)
    np.save(tmp_path / "data/processed/test/images.npy", np.ones((2, 3, 8, 8), np.uint8))
    split, images = export.parity_images(tmp_path)
    assert split == "test" and images.shape == (2, 3, 8, 8)


def test_report_outside_git_is_one_clear_error(tmp_path: Path):
    with pytest.raises(CvreproError, match="not a git repository; the registry is its release tags"):
        report.build(tmp_path, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_confusion_table_counts_actual_against_predicted():
    html = report.confusion_table("image_id,actual,predicted\n1,cart,cart\n2,cart,person\n3,person,person\n4,cart,cart\n")
    rows = html.split("<tr>")[2:]  # header row first
    assert ">2</td>" in rows[0] and ">1</td>" in rows[0]  # cart: 2 right, 1 taken for a person
    assert report.confusion_table("a,b\n1,2\n") == ""  # not a confusion CSV: nothing drawn


def test_pr_chart_reads_the_long_rows_and_the_older_columns():
    long = "class,recall,precision\n" + "".join(f"{c},{r / 100:.2f},{1 - r / 200:.4f}\n" for c in ("cart", "shelf")
                                                 for r in range(101))
    wide = "recall,cart,shelf\n" + "".join(f"{r / 100:.2f},{1 - r / 200:.4f},{1 - r / 200:.4f}\n" for r in range(101))
    drawn = report.pr_chart(long)
    assert "<svg" in drawn and "cart" in drawn and "shelf" in drawn
    assert drawn == report.pr_chart(wide)  # a release made before the long rows draws the same chart
    assert report.pr_chart("a,b\n1,2\n") == ""
