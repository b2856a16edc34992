"""coco_metrics (faster-coco-eval) on small hand-built ground truth, and against bare pycocotools
on the demo and thousands of synthetic images, slices included."""

import copy

import numpy as np
import pytest

from cvrepro.learning.coco_metrics import coco_metrics, slice_ids
from cvrepro.core.fileio import CvreproError


def _gt():
    # 4 images: 1-2 day, 3 night, 4 has no attribute and no objects. Two classes, boxes 40x40.
    images = [
        {"id": 1, "width": 128, "height": 128, "file_name": "a.png", "time_of_day": "day"},
        {"id": 2, "width": 128, "height": 128, "file_name": "b.png", "time_of_day": "day"},
        {"id": 3, "width": 128, "height": 128, "file_name": "c.png", "attributes": {"time_of_day": "night"}},
        {"id": 4, "width": 128, "height": 128, "file_name": "d.png"},
    ]
    anns = [
        (1, 1, [10, 10, 40, 40]),
        (1, 2, [60, 60, 40, 40]),
        (2, 1, [20, 30, 40, 40]),
        (3, 2, [5, 70, 40, 40]),
    ]
    annotations = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, (im, c, b) in enumerate(anns)
    ]
    categories = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _perfect(gt, score=0.9):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
        for a in gt["annotations"]
    ]


def test_perfect_detections_score_one():
    gt = _gt()
    before = copy.deepcopy(gt)
    dets = _perfect(gt)
    dets_before = copy.deepcopy(dets)
    m = coco_metrics(gt, dets)
    assert m["AP"] == 1.0 and m["AP50"] == 1.0 and m["AP75"] == 1.0 and m["AR100"] == 1.0
    assert m["per_class"]["car"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "n_gt": 2}
    assert m["per_class"]["person"]["AP"] == 1.0
    assert m["n_images"] == 4 and m["n_gt"] == 4 and m["n_detections"] == 4
    # 40x40 = 1600 px: medium; no small or large objects -> undefined, not -1
    assert m["APm"] == 1.0 and m["APs"] is None and m["APl"] is None
    # the caller's dicts are not mutated by pycocotools
    assert gt == before and dets == dets_before


def test_half_box_shift_drops_ap50_to_zero():
    gt = _gt()
    dets = _perfect(gt)
    for d in dets:
        d["bbox"][0] += d["bbox"][2] / 2  # IoU = 20*40 / (60*40) = 1/3 < 0.5
    m = coco_metrics(gt, dets)
    assert m["AP50"] == 0.0 and m["AP"] == 0.0
    assert all(v["AP50"] == 0.0 for v in m["per_class"].values())


def test_missing_class_predictions():
    gt = _gt()
    dets = [d for d in _perfect(gt) if d["category_id"] == 1]
    m = coco_metrics(gt, dets)
    assert m["per_class"]["car"]["AP"] == 1.0
    assert m["per_class"]["person"]["AP"] == 0.0
    assert m["AP"] == pytest.approx(0.5)
    assert m["AP"] < coco_metrics(gt, _perfect(gt))["AP"]


def test_false_positive_on_image_without_gt_lowers_precision():
    gt = _gt()
    dets = _perfect(gt, score=0.5) + [{"image_id": 4, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.99}]
    m = coco_metrics(gt, dets)
    assert m["per_class"]["car"]["AP50"] < 1.0
    assert m["per_class"]["person"]["AP50"] == 1.0


def test_empty_detections_give_zeros():
    gt = _gt()
    m = coco_metrics(gt, [])
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert m[k] == 0.0
    assert m["per_class"]["car"]["AP"] == 0.0
    assert m["pr_curve"]["car"] == [0.0] * 101
    assert m["n_detections"] == 0


def test_img_ids_restriction():
    gt = _gt()
    dets = _perfect(gt)
    dets = [d for d in dets if not (d["image_id"] == 3)]  # miss the only night object
    full = coco_metrics(gt, dets)
    day = coco_metrics(gt, dets, img_ids=[1, 2])
    night = coco_metrics(gt, dets, img_ids=[3])
    assert day["AP"] == 1.0
    assert night["AP"] == 0.0
    assert 0.0 < full["AP"] < 1.0
    # car has no ground truth at night: undefined, excluded from the mean, no PR curve
    assert night["per_class"]["car"] == {"AP": None, "AP50": None, "AP75": None, "n_gt": 0}
    assert night["AP"] == night["per_class"]["person"]["AP"]
    assert set(night["pr_curve"]) == {"person"}
    assert night["n_images"] == 1 and night["n_gt"] == 1


def test_subset_without_any_gt_is_undefined():
    gt = _gt()
    m = coco_metrics(gt, _perfect(gt), img_ids=[4])
    assert m["AP"] is None and m["AP50"] is None and m["AR100"] is None
    assert m["pr_curve"] == {}
    assert coco_metrics(gt, _perfect(gt), img_ids=[])["AP"] is None


def test_bad_inputs_raise_clear_errors():
    gt = _gt()
    with pytest.raises(CvreproError, match="not in the ground truth"):
        coco_metrics(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(CvreproError, match="category_id"):
        coco_metrics(gt, [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(CvreproError, match="img_ids"):
        coco_metrics(gt, [], img_ids=[1, 42])
    with pytest.raises(CvreproError, match="missing list"):
        coco_metrics({"images": []}, [])


def test_numpy_inputs_and_missing_optional_gt_fields():
    gt = _gt()
    for a in gt["annotations"]:
        del a["area"], a["iscrowd"]
    dets = [
        {"image_id": np.int64(d["image_id"]), "category_id": np.int64(d["category_id"]),
         "bbox": np.array(d["bbox"], dtype=np.float32), "score": np.float32(d["score"])}
        for d in _perfect(gt)
    ]
    m = coco_metrics(gt, dets, img_ids=np.array([1, 2, 3]))
    assert m["AP"] == 1.0
    assert type(m["AP"]) is float


def test_class_names_override_and_string_keys():
    gt = _gt()
    m = coco_metrics(gt, _perfect(gt), class_names={"1": "vehicle", 2: "pedestrian"})
    assert set(m["per_class"]) == {"vehicle", "pedestrian"}
    assert set(m["pr_curve"]) == {"vehicle", "pedestrian"}


def test_pr_curve_has_101_points_per_class():
    gt = _gt()
    dets = _perfect(gt)
    dets.append({"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.95})  # one FP
    m = coco_metrics(gt, dets)
    assert set(m["pr_curve"]) == {"car", "person"}
    for curve in m["pr_curve"].values():
        assert len(curve) == 101
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in curve)
    assert m["pr_curve"]["car"] == [1.0] * 101
    # person: FP ranked first -> interpolated precision 2/3 all the way to recall 1
    assert m["pr_curve"]["person"][0] == pytest.approx(0.6667)
    assert m["pr_curve"]["person"][-1] == pytest.approx(0.6667)


def test_slice_ids_groups_by_attribute():
    gt = _gt()
    assert slice_ids(gt, "time_of_day") == {"day": [1, 2], "night": [3]}
    assert slice_ids(gt, "weather") == {}
    gt["images"][0]["tags"] = ["x"]
    with pytest.raises(CvreproError):
        slice_ids(gt, "tags")


# ----------------------------------------------------------------- faster-coco-eval equals pycocotools


def _pycocotools(gt: dict, dets: list[dict], ids: list[int]) -> tuple[list, np.ndarray]:
    """The reference: bare pycocotools on a deep copy, as evaluation ran before faster-coco-eval."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats), ev.eval["precision"]


def _noisy_detections(gt: dict, seed: int) -> list[dict]:
    """Ground-truth boxes jittered, some missed, some relabelled, plus false positives; seeded."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.12, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                     "bbox": [float(x + j[0]), float(y + j[1]), float(max(1.0, w + j[2])), float(max(1.0, h + j[3]))]})
    for img in gt["images"]:
        for _ in range(int(rng.integers(0, 3))):
            w, h = (float(v) for v in rng.uniform(4, 60, 2))
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids)), "score": float(rng.random()),
                         "bbox": [float(rng.uniform(0, img["width"] - w)), float(rng.uniform(0, img["height"] - h)), w, h]})
    return dets


def _synthetic_gt(n_images: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480, "weather": ["sun", "rain", "fog"][i % 3]})
        for _ in range(int(rng.integers(0, 6))):
            w, h = (float(v) for v in rng.uniform(6, 300, 2))  # small, medium and large objects
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 6)),
                         "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h],
                         "area": w * h, "iscrowd": int(rng.random() < 0.02)})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 6)]}


def _assert_equal_to_pycocotools(gt: dict, dets: list[dict], ids: list[int], slices: dict) -> None:
    from cvrepro.learning.coco_metrics import STAT_KEYS, CocoEvaluation

    evaluation = CocoEvaluation(gt, dets, ids)
    for subset in [ids, *slices.values()]:
        got = evaluation.metrics(subset)
        stats, precision = _pycocotools(gt, dets, subset)
        assert [got[k] for k in STAT_KEYS] == [None if s < 0 else round(float(s), 4) for s in stats]
        for k, cat in enumerate(sorted(gt["categories"], key=lambda c: c["id"])):
            p = precision[:, :, k, 0, 2]
            want = round(float(p[p > -1].mean()), 4) if (p > -1).any() else None
            assert got["per_class"][cat["name"]]["AP"] == want
            if (p[0] > -1).all():
                assert got["pr_curve"][cat["name"]] == [round(float(v), 4) for v in p[0]]


@pytest.mark.slow  # the pycocotools reference takes ~15 s
def test_equals_pycocotools_on_thousands_of_synthetic_images():
    gt = _synthetic_gt(3000)
    dets = _noisy_detections(gt, seed=1)
    ids = [img["id"] for img in gt["images"] if img["id"] % 5]  # a split: not every image
    slices = {v: [i for i in ids_ if i in set(ids)] for v, ids_ in slice_ids(gt, "weather").items()}
    _assert_equal_to_pycocotools(gt, dets, ids, slices)


@pytest.mark.slow  # renders the demo and runs the pycocotools reference
def test_equals_pycocotools_on_the_demo(tmp_path):
    from cvrepro.dataset.demo import generate_demo
    from cvrepro.core.fileio import read_json

    generate_demo(tmp_path, n_images=300, n_classification=0)
    gt = read_json(tmp_path / "data" / "labels" / "annotations.json")
    dets = _noisy_detections(gt, seed=2)
    ids = [img["id"] for img in gt["images"]]
    _assert_equal_to_pycocotools(gt, dets, ids, slice_ids(gt, "time_of_day"))


def test_split_metrics_slices_equal_separate_evaluations():
    """Slices accumulated from the split's one evaluation equal evaluating each slice on its own."""
    from cvrepro.tasks.detection import split_metrics

    gt = _synthetic_gt(400, seed=3)
    dets = _noisy_detections(gt, seed=4)
    ids = [img["id"] for img in gt["images"] if img["id"] % 4]
    slices = {"weather": slice_ids(gt, "weather")}
    out, _ = split_metrics(gt, dets, ids, {}, slices)
    for value, members in slices["weather"].items():
        alone = coco_metrics(gt, dets, sorted(set(ids) & set(members)))
        assert out["weather"][value] == {"images": alone["n_images"],
                                         **{k: alone[k] for k in ("AP", "AP50", "AP75")}}
        assert alone["n_images"] < len(ids)
