"""Seeded-hash splits: stable under growth, grouped, exact membership recorded."""

from __future__ import annotations

import pytest

from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.splits import assign

RATIOS = {"train": 0.7, "val": 0.2, "test": 0.1}


def manifest(n: int, groups: int | None = None) -> dict:
    files = [{"path": f"img_{i:05d}.png", "image_id": i + 1,
              "attributes": {"group": f"g{i % groups}"} if groups else {}} for i in range(n)]
    return {"files": files, "snapshot_id": "sha256:x"}


def where(members: dict) -> dict:
    return {p: name for name, paths in members.items() for p in paths}


def test_adding_images_never_moves_an_existing_one():
    small = where(assign(manifest(500), 7, RATIOS, None))
    large = where(assign(manifest(2000), 7, RATIOS, None))
    assert all(large[p] == s for p, s in small.items())


def test_ratios_are_respected_and_seed_matters():
    members = assign(manifest(4000), 1, RATIOS, None)
    assert abs(len(members["train"]) / 4000 - 0.7) < 0.03
    assert abs(len(members["test"]) / 4000 - 0.1) < 0.02
    assert members != assign(manifest(4000), 2, RATIOS, None)


def test_groups_stay_together():
    m = manifest(600, groups=30)
    members = where(assign(m, 3, RATIOS, "group"))
    by_group: dict = {}
    for f in m["files"]:
        by_group.setdefault(f["attributes"]["group"], set()).add(members[f["path"]])
    assert all(len(s) == 1 for s in by_group.values())
    assert len({next(iter(s)) for s in by_group.values()}) > 1


def test_missing_group_attribute_names_the_image():
    with pytest.raises(CvreproError, match=r"img_00000.png .*'group'"):
        assign(manifest(3), 3, RATIOS, "group")


def test_bad_ratios_are_refused():
    with pytest.raises(CvreproError, match="split.ratios"):
        assign(manifest(3), 3, {"train": 0.9, "val": 0.2, "test": 0.1}, None)


def test_subset_method_keeps_an_official_test_set_and_divides_train_into_train_and_val():
    from cvrepro.dataset.splits import assign

    files = ([{"path": f"train/{i}.jpg", "image_id": i, "attributes": {"subset": "train"}} for i in range(400)]
             + [{"path": f"test/{i}.jpg", "image_id": 1000 + i, "attributes": {"subset": "test"}} for i in range(30)]
             + [{"path": f"other/{i}.jpg", "image_id": 2000 + i, "attributes": {}} for i in range(50)])
    ratios = {"train": 0.7, "val": 0.2, "test": 0.1}
    members = assign({"files": files}, 42, ratios, None, "subset")
    assert {p for p in members["test"] if not p.startswith("other/")} == {f["path"] for f in files[400:430]}
    assert not any(p.startswith("train/") for p in members["test"])  # train never leaks into the test set
    val_share = sum(p.startswith("train/") for p in members["val"]) / 400
    assert abs(val_share - 0.2 / 0.9) < 0.06  # train/val by the ratios
    with_val = files + [{"path": "val/0.jpg", "image_id": 3000, "attributes": {"subset": "validation"}}]
    members = assign({"files": with_val}, 42, ratios, None, "subset")
    assert "val/0.jpg" in members["val"]  # with a val subset, train stays train and val stays val
    assert set(members["val"]) - {"val/0.jpg"} <= {f["path"] for f in files[430:]}
    assert {f["path"] for f in files[:400]} <= set(members["train"])
    assert assign({"files": files}, 42, ratios, None) != assign({"files": files}, 42, ratios, None, "subset")


def test_an_empty_split_is_refused_unless_the_subsets_leave_it_empty_by_design():
    from cvrepro import tasks
    from dataclasses import replace

    from cvrepro.config.schema import Split
    from cvrepro.dataset.splits import split_record

    detection = tasks.get("detection")
    cfg = Split(method="sha256", seed=0, ratios={"train": 0.5, "val": 0.5, "test": 0.0}, group_key=None)
    two = {"snapshot_id": "sha256:x", "files": [{"path": f"{i}.png", "image_id": i, "attributes": {}} for i in (1, 2)]}
    with pytest.raises(CvreproError, match=r"split: the test split would hold 0 images \(train 1, val 1, test 0"):
        split_record(two, replace(cfg, ratios={"train": 0.5, "val": 0.25, "test": 0.25}), detection)
    subsets = {"snapshot_id": "sha256:x", "files": [
        {"path": f"{i}.png", "image_id": i, "attributes": {"subset": "train" if i < 8 else "val"}} for i in range(10)]}
    record = split_record(subsets, replace(cfg, method="subset", ratios={"train": 0.7, "val": 0.2, "test": 0.1}),
                          detection)
    assert record["counts"] == {"train": 8, "val": 2, "test": 0} and record["fillable"] == ["train", "val"]
    assert "fillable" not in split_record(subsets, replace(cfg, ratios={"train": 0.5, "val": 0.5, "test": 0.0}),
                                          detection)
