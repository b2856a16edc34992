"""Augmentation (conf/augment/, learning/augment.py): torchvision transforms.v2 moving boxes and masks
with the pixels, every draw a function of (seed, epoch, index), bit-identical reruns for every task."""

from __future__ import annotations

import pytest
import torch

from cvrepro.config.schema import Augment
from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError, sha256_file
from cvrepro.core.paths import WEIGHTS
from cvrepro.learning.augment import apply, build

from helpers import prepared_data, tiny_params

STANDARD = typed(tiny_params(overrides=["augment=standard"])).augment


def _sample():
    image = torch.zeros(3, 64, 64)
    image[:, 10:30, 20:50] = 1.0  # one white object on black
    boxes = torch.tensor([[20.0, 10.0, 50.0, 30.0]])
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[10:30, 20:50] = 2
    return image, boxes, mask


def test_draws_depend_on_seed_epoch_index_only():
    t = build(STANDARD, 64, boxes=True)
    image, boxes, _ = _sample()
    target = {"boxes": boxes, "labels": torch.tensor([1])}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = apply(t, 0, 1, 5, image, target)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    torch.manual_seed(999)  # whatever else drew random numbers meanwhile
    b = apply(t, 0, 1, 5, image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    others = [apply(t, 0, epoch, 5, image, target)[0] for epoch in range(2, 6)]
    assert any(not torch.equal(a[0], o) for o in others)
    assert a[0].shape == (3, 64, 64) and a[0].dtype == torch.float32


def test_boxes_and_masks_move_with_the_pixels():
    crops = Augment(name="crops", scale=[0.4, 1.0], vflip=0.5)
    geometric = build(crops, 64, boxes=True)
    dense = build(crops, 64)
    image, boxes, mask = _sample()
    for index in range(20):
        out, target = apply(geometric, 3, 0, index, image, {"boxes": boxes, "labels": torch.tensor([7])})
        assert len(target["boxes"]) == len(target["labels"])  # a box cropped away takes its label along
        for x1, y1, x2, y2 in target["boxes"].round().int().tolist():
            inside = out[0, y1:y2, x1:x2]
            assert inside.numel() and inside.mean() > 0.8  # the box still frames the white object
        out, target = apply(dense, 3, 0, index, image, {"mask": mask})
        assert set(target["mask"].unique().tolist()) <= {0, 2}  # nearest: no invented class ids
        agree = ((out[0] > 0.5) == (target["mask"] == 2)).float().mean()
        assert agree > 0.97


def test_none_builds_nothing_and_unknown_keys_are_refused():
    assert build(typed(tiny_params()).augment, 64) is None  # the default: training as before, bit for bit
    for augment, says in (({"name": "x", "blur": 1.0}, "augment.blur is not a key of augment"),
                          ({"name": "x", "scale": [0.0, 1.0]}, "augment.scale")):
        with pytest.raises(CvreproError, match=says):  # the schema refuses it where params.yaml is read
            typed({**tiny_params(), "augment": augment})
    with pytest.raises(CvreproError, match="augment.scale must be"):
        build(Augment(name="x", scale=[0.9, 0.5]), 64)


@pytest.mark.slow  # trains each task twice
@pytest.mark.parametrize("task, overrides, demo", [
    ("detection", [], {"n_images": 24, "n_classification": 0}),
    ("segmentation", ["task=segmentation", "preprocess.size=64"], {"n_images": 24, "n_classification": 0}),
    ("classification", ["task=classification"], {"n_images": 2, "n_classification": 40}),
])
def test_each_task_trains_with_augmentation_bit_identically(tmp_path, monkeypatch, task, overrides, demo):
    from cvrepro.stages.train import run as train

    monkeypatch.chdir(tmp_path)
    params = tiny_params(overrides=[*overrides, "augment=standard", "train.epochs=1"])
    root = prepared_data(tmp_path, params, **demo)
    train(params, root)
    first = sha256_file(root / WEIGHTS)
    train(params, root)
    assert sha256_file(root / WEIGHTS) == first
    train(tiny_params(overrides=[*overrides, "train.epochs=1"]), root)
    assert sha256_file(root / WEIGHTS) != first  # the augmentation did something
