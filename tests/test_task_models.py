"""The task switch in conf/: every task composes with each of its models, and every
segmentation and classification model builds, takes a training step and predicts."""

from __future__ import annotations


import pytest
import torch
import yaml

from cvrepro.config.compose import compose
from cvrepro.learning.engine import recalibrate_batchnorm
from cvrepro.core.fileio import CvreproError
from cvrepro import tasks
from cvrepro.tasks import build_model

from helpers import REPO, assert_trains_a_step

MODEL_FILES = {p.stem: yaml.safe_load(p.read_text())["name"] for p in (REPO / "conf/model").glob("*.yaml")}
TASK_BUILDERS = {name: tasks.get(name).model_builders() for name in tasks.names()}
TASK_MODELS = [(task, option) for task, builders in TASK_BUILDERS.items()
               for option, name in sorted(MODEL_FILES.items()) if name in builders]
DEFAULTS = {"detection": ("fcos_tiny", "annotations.json"), "segmentation": ("unet_small", "annotations.json"),
            "classification": ("cnn_small", "classification.json")}


from cvrepro.dataset.index import annotations_file  # noqa: E402


def test_every_model_config_belongs_to_a_task():
    assert {option for _, option in TASK_MODELS} == set(MODEL_FILES)


@pytest.mark.parametrize("task", sorted(DEFAULTS))
def test_the_task_switch_picks_its_model_and_dataset(task):
    cfg = compose(REPO / "conf", [f"task={task}"])
    assert cfg["task"] == task
    assert (cfg["model"]["name"], annotations_file(cfg).name) == DEFAULTS[task]
    assert cfg["dataset"]["name"] == "demo"  # the task option never switches the dataset
    # an experiment still applies on top of the task (smoke shortens training)
    assert compose(REPO / "conf", [f"task={task}", "experiment=smoke"])["train"]["epochs"] == 2


@pytest.mark.parametrize("task, option", [t for t in TASK_MODELS if t[0] != "detection"])
def test_model_trains_a_step_and_predicts(task, option):
    cfg = compose(REPO / "conf", [f"task={task}", f"model={option}"])
    assert cfg["model"]["name"] == MODEL_FILES[option]
    size = 64
    model = build_model(cfg["model"], 4, size, cfg["preprocess"]["mean"], cfg["preprocess"]["std"],
                        task=task, class_ids=[1, 2, 3])
    torch.manual_seed(0)
    images = [torch.rand(3, size, size) for _ in range(2)]
    if task == "segmentation":
        targets = [{"mask": torch.randint(0, 4, (size, size))} for _ in range(2)]
        targets[0]["mask"][:4] = 255  # ignored pixels
    else:
        targets = [{"label": torch.tensor(1)}, {"label": torch.tensor(3)}]
    assert_trains_a_step(model, images, targets)
    if cfg["model"].get("bn_recalibration_batches"):
        recalibrate_batchnorm(model, [(images, targets)], 1)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    if task == "segmentation":
        assert out[0]["scores"].shape == (4, size, size) and out[0]["mask"].shape == (size, size)
    else:
        assert out[0]["scores"].shape == (4,)
        assert out[0]["scores"][0] == 0 and int(out[0]["label"]) in (1, 2, 3)  # id 0 is no class here
    assert torch.allclose(out[0]["scores"].sum(0), torch.tensor(1.0))


def test_a_model_of_another_task_is_a_clear_error():
    cfg = compose(REPO / "conf", ["task=classification"])
    with pytest.raises(CvreproError, match=r"'unet_small' is not a classification model \('unet_small' is a segmentation"):
        build_model({"name": "unet_small", "widths": [8]}, 4, 64, cfg["preprocess"]["mean"],
                    cfg["preprocess"]["std"], task="classification")


def test_a_detector_takes_its_thresholds_from_a_spec_record_an_absent_key_its_default():
    """`build_model` gets a predictor spec's recorded `model` (JSON, maybe of an older release without a key)."""
    from cvrepro.config.params import DETECTIONS_PER_IMG
    from cvrepro.config.typed import typed

    cfg = typed(compose(REPO / "conf", ["task=detection"]))
    record = {**cfg.as_dict()["model"], "score_thresh": 0.25, "nms_thresh": 0.5}
    del record["detections_per_img"]  # a spec written before the key existed
    model = build_model(record, 3, 64, [0.5] * 3, [0.25] * 3, task="detection")
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img) == (0.25, 0.5, DETECTIONS_PER_IMG)
