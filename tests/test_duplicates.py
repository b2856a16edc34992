"""Duplicate images (issue 20): exact and near copies found by snapshot, kept in one split by split (and kept
there as the dataset grows), conflicting labels listed; `leaks` for the checks that call it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from cvrepro.core.fileio import CvreproError, read_json
from cvrepro.dataset import dhash
from cvrepro.dataset.duplicates import leaks
from cvrepro.dataset.splits import assign, unit_interval
from cvrepro.stages import snapshot, split

from helpers import REPO, commit_all, copy_template, run, tiny_conf, tiny_params
from helpers.photos import jpeg, photo, write_dataset


@pytest.fixture(scope="module")
def params() -> dict:
    p = tiny_params(REPO, ["task=detection"])
    p["dataset"]["duplicates"] = {"near_threshold": 3, "label_iou": 0.95}
    return p


def distinct(n: int, start: int = 100) -> dict[str, bytes]:
    return {f"other_{i:03d}.jpg": jpeg(photo(i)) for i in range(start, start + n)}


def group_paths(manifest: dict) -> list[list[str]]:
    return [[m["path"] for m in g["members"]] for g in manifest["duplicates"]["groups"]]


def test_exact_reencoded_and_resized_copies_found_different_images_not(tmp_path, params):
    original = photo(1, (120, 90))
    images = {"a.jpg": jpeg(original), "a_copy.jpg": jpeg(original), "a_q60.jpg": jpeg(original, quality=60),
              "a_small.jpg": jpeg(original.resize((108, 81))), **distinct(6)}
    write_dataset(tmp_path, images, {"a_small.jpg": [[3.6, 3.6, 18, 14.4, 1]]})  # the box, resized too
    manifest = snapshot.run(params, tmp_path)
    assert group_paths(manifest) == [["a.jpg", "a_copy.jpg", "a_q60.jpg", "a_small.jpg"]]
    group = manifest["duplicates"]["groups"][0]
    assert group["kind"] == "near" and len(group["links"]) == 3
    assert {"a": "a.jpg", "b": "a_copy.jpg", "distance": 0, "same_bytes": True} in group["links"]
    assert all(link["distance"] <= 3 for link in group["links"])
    assert manifest["duplicates"]["counts"] == {"groups": 1, "exact_groups": 0, "images": 4, "conflicts": 0}
    assert read_json(tmp_path / "data/snapshot/manifest.json")["duplicates"] == manifest["duplicates"]

    exact_only = copy.deepcopy(params)
    exact_only["dataset"]["duplicates"]["near_threshold"] = None
    manifest2 = snapshot.run(exact_only, tmp_path)
    assert group_paths(manifest2) == [["a.jpg", "a_copy.jpg"]]
    assert manifest2["duplicates"]["groups"][0]["kind"] == "exact"
    assert manifest2["snapshot_id"] == manifest["snapshot_id"]  # derived, like stats: not part of the id


def test_a_new_batch_hashes_only_new_images(tmp_path, params, monkeypatch):
    write_dataset(tmp_path, distinct(8))
    snapshot.run(params, tmp_path)
    hashed = []
    real = dhash.dhash_file
    monkeypatch.setattr(dhash, "dhash_file", lambda p: hashed.append(Path(p).name) or real(p))
    write_dataset(tmp_path, {**distinct(8), "new.jpg": jpeg(photo(7)), "new_copy.jpg": jpeg(photo(7))})
    manifest = snapshot.run(params, tmp_path)
    assert hashed == ["new.jpg"]  # one new content; the copy shares its md5
    assert group_paths(manifest) == [["new.jpg", "new_copy.jpg"]]


def _names_straddling(seed: int, count: int) -> list[str]:
    """`count` names the seeded rule puts in at least two different splits, the first of them in train."""
    names, splits = [], set()
    for k in range(1000):
        name = f"g_{k:03d}.jpg"
        u = unit_interval(seed, name)
        s = "train" if u < 0.7 else "val" if u < 0.9 else "test"
        if (not names and s == "train") or (names and (s not in splits or len(names) == count - 1)):
            names.append(name)
            splits.add(s)
        if len(names) == count:
            return names
    raise AssertionError("no names found")


def test_a_group_is_never_split_and_stays_put_when_images_are_added(tmp_path, params):
    a, b, c = _names_straddling(params["split"]["seed"], 3)
    original = photo(2)
    images = {a: jpeg(original), b: jpeg(original), c: jpeg(original, quality=70), **distinct(27)}
    write_dataset(tmp_path, images)
    manifest = snapshot.run(params, tmp_path)
    plain = assign(manifest, params["split"]["seed"], params["split"]["ratios"], None)
    assert leaks(manifest, plain), "the rule alone puts this group in two splits"
    first = split.run(params, tmp_path)
    assert leaks(manifest, first) == []
    where = {p: s for s, paths in first["splits"].items() for p in paths}
    assert where[a] == where[b] == where[c] == "train"  # the anchor (first by path) keeps its own split
    assert first["duplicates"] == [{"members": [a, b, c], "split": "train"}]

    # 10% more images, among them a copy named to come first, whose own split by the rule is not train
    joiner = next(f"0_{k}.jpg" for k in range(100) if unit_interval(params["split"]["seed"], f"0_{k}.jpg") >= 0.7)
    write_dataset(tmp_path, {**images, joiner: jpeg(original, quality=80), **distinct(2, start=500)})
    manifest = snapshot.run(params, tmp_path)
    assert group_paths(manifest) == [[joiner, a, b, c]]
    second = split.run(params, tmp_path)
    now = {p: s for s, paths in second["splits"].items() for p in paths}
    assert all(now[p] == s for p, s in where.items()), "an image assigned before moved"
    assert now[joiner] == "train" and leaks(manifest, second) == []

    # without the previous split (or with other settings) the group still lands in one split
    (tmp_path / "data/splits/splits.json").unlink()
    fresh = split.run(params, tmp_path)
    assert leaks(manifest, fresh) == []

    # a splits.json from before duplicates were kept together (no `duplicates` key, same settings) holds the
    # leak of the plain rule: it is not history, so the next split mends the leak instead of keeping it
    old_rule = assign(manifest, params["split"]["seed"], params["split"]["ratios"], None)
    assert leaks(manifest, old_rule)
    legacy = {k: v for k, v in fresh.items() if k != "duplicates"} | {"splits": old_rule}
    (tmp_path / "data/splits/splits.json").write_text(json.dumps(legacy))
    mended = split.run(params, tmp_path)
    assert leaks(manifest, mended) == [] and not any(g.get("apart") for g in mended["duplicates"])


def test_subset_with_a_group_key_some_images_lack_still_splits(tmp_path, params):
    """split.method subset + group_key: an image fixed by its subset may have no group attribute."""
    write_dataset(tmp_path, distinct(40))
    labels = tmp_path / "data/labels/annotations.json"
    coco = json.loads(labels.read_text())
    for i, im in enumerate(coco["images"]):
        im["subset"] = "test" if i < 3 else "train"
        if i >= 3:  # the test-subset images (fixed by their subset) carry no site
            im["site"] = f"s{i}"
    labels.write_text(json.dumps(coco))
    cfg = {**params, "split": {**params["split"], "method": "subset", "group_key": "site"}}
    snapshot.run(cfg, tmp_path)
    result = split.run(cfg, tmp_path)
    assert sum(len(v) for v in result["splits"].values()) == 40 and len(result["splits"]["test"]) == 3


def test_conflicting_labels_are_listed_with_both_labels(tmp_path, params):
    original = photo(3, (100, 80))
    images = {"x.jpg": jpeg(original), "x_copy.jpg": jpeg(original), "x_half.jpg": jpeg(original.resize((50, 40))),
              "y.jpg": jpeg(photo(4)), "y_copy.jpg": jpeg(photo(4)), **distinct(4)}
    boxes = {"x.jpg": [[10, 10, 40, 30, 1]], "x_copy.jpg": [[20, 14, 40, 30, 1]],  # moved: IoU 0.5
             "x_half.jpg": [[5, 5, 20, 15, 1]],  # the same box at half the size: agrees with x.jpg
             "y.jpg": [[10, 10, 40, 30, 1]], "y_copy.jpg": [[10, 10, 40, 30, 2]]}  # another class
    write_dataset(tmp_path, images, boxes)
    manifest = snapshot.run(params, tmp_path)
    x_group, y_group = manifest["duplicates"]["groups"]
    assert {(c["a"], c["b"]) for c in x_group["conflicts"]} == {("x.jpg", "x_copy.jpg"), ("x_copy.jpg", "x_half.jpg")}
    conflict = x_group["conflicts"][0]
    assert conflict["reason"].startswith("box IoU 0.")
    assert [lab["bbox"] for lab in (conflict["a_labels"] + conflict["b_labels"])] == [[10, 10, 40, 30], [20, 14, 40, 30]]
    (conflict,) = y_group["conflicts"]
    assert conflict["reason"] == "class 1 vs 2"
    assert conflict["a_labels"][0]["category_id"] == 1 and conflict["b_labels"][0]["category_id"] == 2
    assert manifest["duplicates"]["counts"]["conflicts"] == 3


def test_near_pairs_equals_the_brute_force_search():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.uint64) << np.uint64(1)
    hashes[10] = hashes[3] ^ np.uint64(0b10110)  # planted: 3 bits
    hashes[11] = hashes[3]
    hashes[200:260] = hashes[7]  # a big bucket
    for threshold in (0, 3, 6):
        found = {tuple(r) for r in dhash.near_pairs(hashes, threshold).tolist()}
        d = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
        i, j = np.nonzero(np.triu(d <= threshold, 1))
        assert found == {(int(a), int(b), int(d[a, b])) for a, b in zip(i, j)}


def test_a_file_that_does_not_decode_has_no_hash_and_still_finds_its_exact_copy(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9")
    assert dhash._safe_dhash(str(broken)) is None
    files = [{"path": "a.jpg", "md5": "1" * 32}, {"path": "b.jpg", "md5": "1" * 32}, {"path": "c.jpg", "md5": "2" * 32}]
    hashes = (np.array([0, 0, 0], dtype=np.uint64), np.array([False, False, True]))
    from cvrepro.dataset.duplicates import find_groups
    (group,) = find_groups(files, hashes, 3)
    assert [m["path"] for m in group["members"]] == ["a.jpg", "b.jpg"] and group["members"][0]["dhash"] is None


def test_a_bad_threshold_is_one_clear_line(tmp_path, params):
    write_dataset(tmp_path, distinct(3))
    bad = copy.deepcopy(params)
    bad["dataset"]["duplicates"]["near_threshold"] = "four"
    with pytest.raises(CvreproError, match=r"^params.yaml: dataset.duplicates.near_threshold must be"):
        snapshot.run(bad, tmp_path)
    assert not (tmp_path / "data/snapshot/manifest.json").exists()


@pytest.mark.slow
def test_dvc_repro_keeps_a_copy_with_its_released_original(tmp_path):
    """Real git + DVC: a copy of a tracked image added later joins its original's split, through `persist`."""
    root = copy_template(tmp_path / "project")
    tiny_conf(root)
    run(["cvrepro", "demo", "--images", "30", "--seed", "2"], root)
    run(["dvc", "add", "data/raw", "data/labels"], root)
    run(["dvc", "repro", "split"], root)
    first = read_json(root / "data/splits/splits.json")
    assert first["duplicates"] == []
    commit_all(root, "data")
    index_path = root / "data/labels/annotations.json"
    index = json.loads(index_path.read_text())
    test_image = first["splits"]["test"][0]
    copy_name = "0_copy.png"  # first by path: it would be the anchor without the previous split
    (root / "data/raw" / copy_name).write_bytes((root / "data/raw" / test_image).read_bytes())
    src = next(im for im in index["images"] if im["file_name"] == test_image)
    new_id = max(im["id"] for im in index["images"]) + 1
    index["images"].append({**src, "id": new_id, "file_name": copy_name})
    index["annotations"] += [{**a, "id": 10_000 + k, "image_id": new_id}
                             for k, a in enumerate(a for a in index["annotations"] if a["image_id"] == src["id"])]
    index_path.write_text(json.dumps(index))
    run(["dvc", "add", "data/raw", "data/labels"], root)
    run(["dvc", "repro", "split"], root)
    manifest = read_json(root / "data/snapshot/manifest.json")
    assert [[m["path"] for m in g["members"]] for g in manifest["duplicates"]["groups"]] == [[copy_name, test_image]]
    second = read_json(root / "data/splits/splits.json")
    assert copy_name in second["splits"]["test"] and test_image in second["splits"]["test"]
    for name, paths in first["splits"].items():
        assert set(paths) <= set(second["splits"][name])
    assert "persist: true" in (root / "dvc.yaml").read_text()
