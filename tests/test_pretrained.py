"""Pretrained starts: `model.weights_backbone`, whole-model `model.weights` with another head, the hub
cache, freezing. Every state dict here is saved by the test itself: nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cvrepro.core.fileio import CvreproError, read_json, sha256_file
from cvrepro.core.paths import LABEL_MAP, WEIGHTS
from cvrepro.learning.models import backbone_of, freeze_backbone
from cvrepro.tasks import build_model

from helpers import tiny_params

MEAN, STD = [0.5] * 3, [0.25] * 3
TINY = {"name": "fcos_tiny", "widths": [8, 16, 16, 16], "fpn_channels": 32}


def _fcos(k: int, **cfg):
    return build_model({**TINY, **cfg}, k, 64, MEAN, STD, task="detection")


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_backbone_from_a_saved_state_dict_into_another_class_count(tmp_path):
    torch.manual_seed(0)
    source = _fcos(4)
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    model = _fcos(7, weights_backbone=str(path))
    assert _same(model.backbone.state_dict(), source.backbone.state_dict())
    assert model.head.classification_head.cls_logits.out_channels == 7
    # a whole detector's state dict works too: its `backbone.` prefix is found
    torch.save(source.state_dict(), tmp_path / "detector.pt")
    again = _fcos(7, weights_backbone=str(tmp_path / "detector.pt"))
    assert _same(again.backbone.state_dict(), source.backbone.state_dict())


def test_whole_model_weights_with_another_head(tmp_path, capsys):
    torch.manual_seed(0)
    source = _fcos(4)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    model = _fcos(9, weights=str(tmp_path / "model.pt"))
    own, src = model.state_dict(), source.state_dict()
    differ = [k for k in own if own[k].shape != src[k].shape]
    assert differ == ["head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"]
    assert all(torch.equal(own[k], src[k]) for k in own if k not in differ)
    assert "2 head tensors have another shape" in capsys.readouterr().err
    # another architecture is refused with a clear message, not half-loaded
    torch.save(_fcos(4, widths=[8, 16, 16, 24]).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CvreproError, match="backbone tensors differ in shape"):
        _fcos(9, weights=str(tmp_path / "other.pt"))


def test_absent_or_bad_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(CvreproError, match=r"model.weights_backbone '.*none.pt' is not a local file"):
        _fcos(4, weights_backbone=str(tmp_path / "none.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(CvreproError, match="is not in the torch hub cache"):
        _fcos(4, weights_backbone="hub:resnet18-f37072fd.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CvreproError, match="junk.pt' is not a torch state dict"):
        _fcos(4, weights=str(tmp_path / "junk.pt"))
    torch.save({"stem.0.0.weight": torch.zeros(1)}, tmp_path / "small.pt")
    with pytest.raises(CvreproError, match="does not fit the backbone"):
        _fcos(4, weights_backbone=str(tmp_path / "small.pt"))


def test_torchvision_imagenet_shaped_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """torchvision's own ImageNet state dicts (here freshly initialised, same keys and shapes) in the
    hub cache, as a team with internet would have them after one torchvision download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    resnet = torchvision.models.resnet18(num_classes=1000)
    torch.save(resnet.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    cls = build_model({"name": "resnet18", "weights_backbone": "hub:resnet18-f37072fd.pth"}, 5, 64, MEAN, STD,
                      task="classification")
    got = cls.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in resnet.state_dict().items() if not k.startswith("fc."))
    assert got["fc.weight"].shape == (5, 512)
    mobilenet = torchvision.models.mobilenet_v3_large(num_classes=1000)  # keys features.N...
    path = tmp_path / "mobilenet.pth"
    torch.save(mobilenet.state_dict(), path)
    seg = build_model({"name": "lraspp_mobilenet_v3_large", "weights_backbone": str(path)}, 4, 64, MEAN, STD,
                      task="segmentation")
    assert torch.equal(seg.net.backbone["0"][0].weight, mobilenet.features[0][0].weight)


def test_freezing_keeps_early_blocks_and_their_batchnorm_statistics():
    torch.manual_seed(0)
    model = _fcos(4)
    assert freeze_backbone(model, 1) == ["stem"]
    backbone, _ = backbone_of(model)
    before = {k: v.clone() for k, v in backbone.stem.state_dict().items()}
    later = backbone.stages[0][0][0].weight.clone()
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = sum(model(images, targets).values())
    loss.backward()
    opt.step()
    assert _same(backbone.stem.state_dict(), before)  # weights and running statistics
    assert not torch.equal(backbone.stages[0][0][0].weight, later)
    with pytest.raises(CvreproError, match="only 3 blocks"):
        freeze_backbone(_fcos(4), 4)


@pytest.mark.slow  # trains
def test_fine_tune_from_a_backbone_state_dict_then_predict_without_it(tiny_root, tmp_path):
    """The pipeline's train stage starts from a saved backbone (another class count: 3 classes
    here, 11 outputs there), is deterministic, and the trained model loads without the file."""
    from cvrepro.learning.artifacts import load_predictor
    from cvrepro.stages.train import run as train

    torch.manual_seed(0)
    source = build_model(tiny_params()["model"], 11, 128, MEAN, STD, task="detection")
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    params = tiny_params(overrides=[f"+model.weights_backbone={path}", "+model.freeze=1"])
    train(params, tiny_root)
    weights = sha256_file(tiny_root / WEIGHTS)
    trained = torch.load(tiny_root / WEIGHTS, weights_only=True)
    assert torch.equal(trained["backbone.stem.0.0.weight"], source.backbone.stem[0][0].weight)  # frozen
    assert not torch.equal(trained["backbone.stages.0.0.0.weight"], source.backbone.stages[0][0][0].weight)
    scratch = tiny_params()
    train(scratch, tiny_root)
    assert sha256_file(tiny_root / WEIGHTS) != weights  # the start mattered
    train(params, tiny_root)
    assert sha256_file(tiny_root / WEIGHTS) == weights  # and is deterministic
    path.unlink()  # a predictor needs the architecture and model.pt only
    model, spec, _ = load_predictor(tiny_root / "models")
    assert spec["model"]["weights_backbone"] == str(path) and read_json(tiny_root / LABEL_MAP)
    assert model(torch.rand(1, 3, 128, 128))[0]["boxes"].shape[1] == 4
