"""The dataset fingerprint (dataset/fingerprint.py) and the defaults chosen from it (tasks/defaults.py): figures
checked by hand on built indexes, the size rules, the budget, the written option composing with Hydra, the
manifest key outside snapshot_id, and the demo's composition left alone. No image is decoded for a fingerprint;
the manifest test writes a few tiny PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cvrepro import tasks
from cvrepro.cli import main
from cvrepro.config.compose import compose
from cvrepro.config.schema import Detector, FcosTiny, Ssdlite
from cvrepro.core.fileio import CvreproError
from cvrepro.dataset.fingerprint import from_index, percentiles
from cvrepro.dataset.manifest import _snapshot_id, build_manifest
from cvrepro.provenance.release import dataset_notes
from cvrepro.tasks.defaults import choose, choose_pretrained, parse_budget, write_dataset_defaults

from helpers import REPO, copy_template, run

DETECTION = tasks.get("detection")
# model sections as the config builds them: fcos_tiny has anchor_scale, the others not
TINY = FcosTiny(name="fcos_tiny", widths=[16, 32, 64, 96], fpn_channels=64)
SSD = Ssdlite(name="ssdlite320_mobilenet_v3_large")
FCOS50 = Detector(name="fcos_resnet50_fpn")


def coco(n_images: int, size: tuple[int, int], boxes: list[tuple[int, float, float]]) -> dict:
    """n_images of `size`; every image gets each (category id, w, h) box at the top left."""
    images = [{"id": i + 1, "file_name": f"im{i}.jpg", "width": size[0], "height": size[1]} for i in range(n_images)]
    anns = [{"id": i * len(boxes) + j + 1, "image_id": i + 1, "category_id": c, "bbox": [0, 0, w, h]}
            for i in range(n_images) for j, (c, w, h) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "dish"}]}


def fp_of(tmp_path: Path, index: dict, task=DETECTION) -> dict:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(index))
    return from_index(path, task)


def test_percentiles_on_a_built_fixture(tmp_path):
    index = coco(2, (640, 480), [(1, 10, 10), (1, 30, 30)])
    index["images"].append({"id": 3, "file_name": "wide.jpg", "width": 800, "height": 200})
    index["annotations"] += [{"id": 9, "image_id": 3, "category_id": 2, "bbox": [0, 0, 40, 10]}]
    fp = fp_of(tmp_path, index)
    assert fp["classes"] == {"cell": 4, "dish": 1}
    assert fp["images"]["count"] == 3 and fp["images"]["long_side"]["p50"] == 640
    assert fp["images"]["width"]["min"] == 640 and fp["images"]["width"]["max"] == 800
    assert fp["objects_per_image"]["p50"] == 2 and fp["objects_per_image"]["min"] == 1
    cell = fp["object_size"]["cell"]
    assert cell["side"]["n"] == 4 and cell["side"]["p50"] == 20.0 and cell["side"]["p25"] == 10.0
    assert cell["side_rel"]["p50"] == round(20 / 640, 4)
    dish = fp["object_size"]["dish"]
    assert dish["side"]["p50"] == 20.0 and dish["short_over_long"]["p50"] == 0.25  # sqrt(40 x 10), 10/40
    assert fp["all_objects"]["side"]["n"] == 5
    # the interpolation is numpy's
    values = np.arange(17.0) ** 1.5
    assert percentiles(values)["p25"] == round(float(np.percentile(values, 25)), 1)
    assert percentiles([]) == {"n": 0}


def test_a_bad_index_is_one_line_naming_the_file_and_field(tmp_path):
    index = coco(1, (64, 64), [(1, 10, 10)])
    index["annotations"][0]["bbox"] = [0, 0, -1, 5]
    with pytest.raises(CvreproError, match=r"annotations.json: annotations\[0\].*'bbox'"):
        fp_of(tmp_path, index)


def test_small_objects_get_a_larger_letterboxed_input_and_big_objects_a_small_one(tmp_path):
    small = choose(fp_of(tmp_path, coco(200, (640, 480), [(1, 30, 30), (2, 200, 150)])), DETECTION, SSD, "gpu", [])
    big = choose(fp_of(tmp_path, coco(200, (512, 512), [(1, 480, 460), (2, 500, 500)])), DETECTION, SSD, "gpu", [])
    small_pp, big_pp = dict((k, v) for k, v, _ in small["preprocess"]), dict((k, v) for k, v, _ in big["preprocess"])
    assert small_pp["resize"] == "letterbox" and big_pp["resize"] == "stretch"
    assert small_pp["size"] == 640  # 32 px for 30 px of 640 wants 683: no upscaling past the images
    assert big_pp["size"] <= 224  # the median object already fills the frame
    assert small_pp["store"] == "npy"


@pytest.mark.parametrize("budget", ["gpu", str(200 * 640 * 640)])
def test_12_px_objects_get_a_larger_input_than_60_px_ones_written_with_reasons_and_selected(tmp_path, budget):
    """Issue 19's acceptance: 640x480 images, 12 px against 60 px objects (the cpu budget caps both at 320)."""
    sizes = {}
    for side in (12, 60):
        root = copy_template(tmp_path / f"p{side}")
        (root / "data/labels").mkdir(parents=True, exist_ok=True)
        (root / "data/labels/mine.json").write_text(json.dumps(coco(200, (640, 480), [(1, side, side)])))
        (root / "conf/dataset/mine.yaml").write_text("name: mine\ntask: detection\nnotes: ''\nannotations: mine.json\n"
                                                     "annotations_by_task: {}\nignore_index: 255\ninvalid: fail\n")
        config = root / "conf/config.yaml"  # selected, as `cvrepro import` selects what it imports
        config.write_text(config.read_text().replace("- dataset: demo", "- dataset: mine"))
        summary = write_dataset_defaults(root, "mine", budget=budget)  # writes it and recomposes params.yaml
        text = (root / summary["option"]).read_text()
        size_line = next(line for line in text.splitlines() if line.startswith("  size:"))
        assert "should span" in size_line.split("#", 1)[1]  # the reason beside the value
        params = yaml.safe_load((root / "params.yaml").read_text())
        assert params["dataset"]["name"] == "mine" and params["preprocess"]["resize"] == "letterbox"
        sizes[side] = params["preprocess"]["size"]
    assert sizes[12] > sizes[60], sizes
    assert sizes[12] == 640 and sizes[60] <= 384  # 12 px want 1707 (no upscaling past 640); 60 px want 341-384


def test_budget_caps_size(tmp_path):
    fp = fp_of(tmp_path, coco(200, (1280, 960), [(1, 20, 20)]))
    size = {b: dict((k, v) for k, v, _ in choose(fp, DETECTION, SSD, b, [])["preprocess"])["size"]
            for b in ("cpu", "gpu", str(200 * 128 * 128))}
    assert size == {"cpu": 320, "gpu": 1024, str(200 * 128 * 128): 128}
    reason = dict((k, r) for k, _, r in choose(fp, DETECTION, SSD, "cpu", [])["preprocess"])["size"]
    assert "budget cpu caps it at 320" in reason
    many = fp_of(tmp_path, coco(30_000, (1280, 960), [(1, 20, 20)]))  # more images: less per image
    assert dict((k, v) for k, v, _ in choose(many, DETECTION, SSD, "cpu", [])["preprocess"])["size"] == 96
    with pytest.raises(CvreproError, match="--budget 'fast'"):
        parse_budget("fast")


def test_anchor_scale_only_for_a_model_that_has_one(tmp_path):
    fp = fp_of(tmp_path, coco(20, (640, 480), [(1, 100, 80)]))
    assert [k for k, _, _ in choose(fp, DETECTION, TINY, "cpu", [])["model"]] \
        == ["anchor_scale"]
    assert choose(fp, DETECTION, SSD, "cpu", [])["model"] == []


def test_pretrained_backbone_only_from_the_hub_cache_and_for_small_data(tmp_path):
    fp = fp_of(tmp_path, coco(20, (640, 480), [(1, 100, 80)]))
    files = ["resnet50-0676ba61.pth"]
    chosen, hints = choose_pretrained(fp, FCOS50, files)
    assert chosen[0][:2] == ("weights_backbone", "hub:resnet50-0676ba61.pth") and chosen[1][:2] == ("freeze", 5)
    assert choose_pretrained(fp, FCOS50, []) == ([], [])  # nothing is downloaded
    chosen, hints = choose_pretrained(fp, TINY, files)
    assert chosen == [] and "-S model=fcos_resnet50_fpn -S model.weights_backbone=hub:resnet50-0676ba61.pth" in hints[0]
    fp["images"]["count"] = 50_000
    assert choose_pretrained(fp, FCOS50, files)[0] == []


def test_segmentation_fingerprints_mask_areas(tmp_path):
    from cvrepro.dataset.masks import mask_png

    seg = tasks.get("segmentation")
    images = []
    for i, side in enumerate((4, 8)):
        mask = np.zeros((32, 32), np.uint8)
        mask[:side, :side] = 1
        (tmp_path / f"m{i}.png").write_bytes(mask_png(mask))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 32, "height": 32, "mask_file": f"m{i}.png"})
    fp = fp_of(tmp_path, {"images": images, "categories": [{"id": 1, "name": "road"}]}, seg)
    road = fp["mask_area"]["road"]
    assert road["side"]["p50"] == 6.0 and road["side"]["n"] == 2
    assert road["fraction"] == round((16 + 64) / (2 * 32 * 32), 6)
    assert seg.resolution_need(fp)[0][1] == 16


@pytest.fixture
def mine(tmp_path) -> Path:
    """A copy of the template with a second dataset option `mine` (small objects in 640x480 images)."""
    root = copy_template(tmp_path / "project")
    labels = root / "data/labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "mine.json").write_text(json.dumps(coco(100, (640, 480), [(1, 30, 30), (2, 120, 90)])))
    (root / "conf/dataset/mine.yaml").write_text("name: mine\ntask: detection\nnotes: ''\nannotations: mine.json\n"
                                                 "annotations_by_task: {}\nignore_index: 255\ninvalid: fail\n")
    return root


def test_written_yaml_composes_with_hydra_and_carries_reasons(mine, capsys):
    before = (mine / "params.yaml").read_text()
    assert main(["fingerprint", "--root", str(mine), "--name", "mine", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["chosen"]["preprocess"] == {"resize": "letterbox", "size": 320, "store": "npy"}
    assert not (mine / "conf/fingerprint").exists()  # without --write nothing is written
    summary = write_dataset_defaults(mine, "mine")
    option = mine / summary["option"]
    text = option.read_text()
    values = [line for line in text.splitlines() if line.startswith("  ")]
    assert values and all("  # " in line for line in values)  # every value says why
    assert (mine / "params.yaml").read_text() == before  # the demo is still selected: nothing changed
    config = mine / "conf/config.yaml"
    config.write_text(config.read_text().replace("- dataset: demo", "- dataset: mine"))
    run(["cvrepro", "compose", "--force"], mine)
    params = yaml.safe_load((mine / "params.yaml").read_text())
    assert params["preprocess"]["size"] == 320 and params["preprocess"]["resize"] == "letterbox"
    assert params["model"]["anchor_scale"] == yaml.safe_load(text)["model"]["anchor_scale"]
    assert compose(mine / "conf", ["preprocess.size=256"])["preprocess"]["size"] == 256  # -S still wins
    assert compose(mine / "conf", ["dataset=demo"]) == yaml.safe_load(before)  # another dataset: not applied
    # rewriting chooses afresh, and a hand-written file is refused, not replaced
    assert write_dataset_defaults(mine, "mine")["written"]
    option.write_text("# mine\npreprocess:\n  size: 64\n")
    with pytest.raises(CvreproError, match="not written by `cvrepro fingerprint`"):
        write_dataset_defaults(mine, "mine")


def test_bad_budget_on_the_command_line_is_one_line(mine, capsys):
    assert main(["fingerprint", "--root", str(mine), "--name", "mine", "--budget", "lots", "--write"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--budget 'lots'" in err
    assert not (mine / "conf/fingerprint").exists()


def _tiny_dataset(root: Path) -> Path:
    for i in range(3):
        (root / "data/raw").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(root / f"data/raw/{i}.png")
    index = coco(3, (40, 30), [(1, 10, 8)])
    for im in index["images"]:
        im["file_name"] = f"{im['id'] - 1}.png"
    path = root / "data/labels/annotations.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(index))
    return path


def test_manifest_fingerprint_does_not_change_snapshot_id(tmp_path):
    ann = _tiny_dataset(tmp_path)
    manifest = build_manifest(tmp_path / "data/raw", ann, task=tasks.get("detection"))
    assert manifest["fingerprint"]["all_objects"]["side"]["p50"] == round(80 ** 0.5, 1)
    assert manifest["fingerprint"] == from_index(ann, DETECTION)  # snapshot and the command agree
    ident = _snapshot_id(manifest["task"], manifest["class_map"], manifest["files"])
    assert manifest["snapshot_id"] == ident  # hashed from files and class map only: the fingerprint is not in it
    notes = dataset_notes({"version": "DS-0.1.0", "task": "detection", "stats": manifest["stats"],
                           "class_map": manifest["class_map"], "snapshot_id": ident, "source_commit": "abc",
                           "bump": "minor", "split": {}, "notes": "", "fingerprint": manifest["fingerprint"]})
    assert "## Fingerprint" in notes and "cell: 3 objects" in notes


def test_the_demo_composition_is_untouched_by_the_default_pipeline(tmp_path):
    """The optional default finds no conf/fingerprint/demo.yaml: params.yaml is exactly what it was, and
    snapshot (the only pipeline stage computing a fingerprint) writes nothing under conf/."""
    assert not (REPO / "conf/fingerprint/demo.yaml").exists()
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert compose(REPO / "conf") == committed
    from cvrepro.stages import snapshot

    _tiny_dataset(tmp_path)
    (tmp_path / "conf").mkdir()
    snapshot.run(compose(REPO / "conf", ["task=detection"]), tmp_path)
    assert list((tmp_path / "conf").iterdir()) == []
