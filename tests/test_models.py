"""Every selectable detector builds from its config, takes a training step and predicts."""

from __future__ import annotations


import pytest
import torch
import yaml

from cvrepro.config.compose import compose
from cvrepro.learning.engine import recalibrate_batchnorm
from cvrepro.core.fileio import CvreproError
from cvrepro.learning.models import DETECTION_BUILDERS as BUILDERS
from cvrepro.tasks import build_model

from helpers import REPO, assert_trains_a_step

# the detectors; segmentation and classification models: tests/test_task_models.py
MODELS = sorted(p.stem for p in (REPO / "conf/model").glob("*.yaml")
                if yaml.safe_load(p.read_text())["name"] in BUILDERS)


def batch(n: int = 2):
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 90.0], [60.0, 60.0, 120.0, 100.0]]),
                "labels": torch.tensor([1, 3])} for _ in range(n)]
    return images, targets


@pytest.mark.parametrize("name", MODELS)
def test_model_trains_a_step_and_predicts(name):
    cfg = compose(REPO / "conf", [f"model={name}"])
    model = build_model(cfg["model"], 4, 128, cfg["preprocess"]["mean"], cfg["preprocess"]["std"], task="detection")
    assert model.transform.image_mean == cfg["preprocess"]["mean"]
    images, targets = batch()
    assert_trains_a_step(model, images, targets)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])


def test_batchnorm_recalibration_replaces_the_running_statistics():
    cfg = compose(REPO / "conf", ["model=ssdlite"])
    model = build_model(cfg["model"], 4, 128, cfg["preprocess"]["mean"], cfg["preprocess"]["std"], task="detection")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    recalibrate_batchnorm(model, [batch(), batch()], max_batches=2)
    assert not torch.equal(before, bn.running_mean)
    assert bn.num_batches_tracked.item() == 2 and not model.training


def test_unknown_model_and_missing_weights_are_clear_errors(tmp_path):
    cfg = compose(REPO / "conf")
    with pytest.raises(CvreproError, match="model.name 'nope'"):
        build_model({**cfg["model"], "name": "nope"}, 4, 128, [0.5] * 3, [0.5] * 3, task="detection")
    with pytest.raises(CvreproError, match="not a local file"):
        build_model({**cfg["model"], "weights": str(tmp_path / "none.pth")}, 4, 128, [0.5] * 3, [0.5] * 3, task="detection")
