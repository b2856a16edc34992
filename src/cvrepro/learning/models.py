"""The networks and their builders, chosen by `model.name` in params.yaml, one family per task
(each task module says which family is its own: `Task.model_builders`).

Every model keeps torchvision's detection calling convention, so one engine trains
them all: in train mode `model(images, targets)` returns a dict of losses, in eval
mode a list of per-image dicts.
  detection: torchvision detectors; targets {boxes, labels}; outputs {boxes, scores, labels}
  segmentation: targets {mask}; outputs {scores [K,S,S] softmax, mask [S,S]}
  classification: targets {label}; outputs {scores [K] softmax, label}
Labels are the dataset's category ids (0 = background in segmentation). Nothing is
downloaded: stock architectures start from scratch unless `model.weights` names a
local state-dict file.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models import resnet18
from torchvision.models.detection import FCOS, fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork

from cvrepro.core.fileio import CvreproError


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """A plain conv net (stride 4 stem, then three stride-2 stages) with an FPN on
    the stride 8/16/32 features. `out_channels` is what torchvision heads expect."""

    def __init__(self, widths: list[int], fpn_channels: int):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(_conv_bn(3, w0, 2), _conv_bn(w0, w0, 2))
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn(cin, cout, 2), _conv_bn(cout, cout, 1))
            for cin, cout in ((w0, w1), (w1, w2), (w2, w3))
        )
        self.fpn = FeaturePyramidNetwork([w1, w2, w3], fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[f"p{i + 3}"] = x
        return self.fpn(feats)


def _fcos_tiny(cfg: dict, num_classes: int, size: int) -> nn.Module:
    # FCOS sends a box to the level where its largest center-to-edge distance lies in
    # (4, 8) x the anchor size. With anchors of stride x anchor_scale (1.0, torchvision's
    # FCOS convention) every box under 128 px lands on the stride-8 level: tall, narrow
    # objects (people) keep feature locations inside them, which a coarser level would
    # not give (measured: person AP50 0.65 with anchor_scale 0.25, 0.92 with 1.0).
    # Center sampling stays at FCOS's usual 1.5 strides.
    strides = (8, 16, 32)
    scale = float(cfg.get("anchor_scale", 1.0))
    anchors = AnchorGenerator(sizes=tuple((s * scale,) for s in strides), aspect_ratios=((1.0,),) * 3)
    return FCOS(
        TinyBackbone(cfg["widths"], cfg["fpn_channels"]),
        num_classes,
        min_size=size,
        max_size=size,
        anchor_generator=anchors,
        center_sampling_radius=1.5 / scale,
        topk_candidates=200,
    )


DETECTION_BUILDERS = {
    "fcos_tiny": _fcos_tiny,
    "fcos_resnet50_fpn": lambda cfg, k, size: fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=k, min_size=size, max_size=size
    ),
    # SSDlite resizes to its fixed 320 x 320 input internally.
    "ssdlite320_mobilenet_v3_large": lambda cfg, k, size: ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=k
    ),
}


class UNet(nn.Module):
    """A small U-Net: two 3x3 conv-BN-ReLU per level, max-pool down, bilinear up + skip concat."""

    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(nn.Sequential(_conv_bn(cin, w, 1), _conv_bn(w, w, 1)))
            cin = w
        self.up = nn.ModuleList(
            nn.Sequential(_conv_bn(widths[i + 1] + widths[i], widths[i], 1), _conv_bn(widths[i], widths[i], 1))
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class SmallCNN(nn.Module):
    """A plain classifier: stride-2 conv-BN-ReLU stages, global average pool, linear."""

    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [_conv_bn(cin, w, 2), _conv_bn(w, w, 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class DenseTask(nn.Module):
    """Wraps a plain network (segmentation or classification) in the detection calling convention.

    Normalises uint8/255 inputs with mean/std like torchvision's detection transform, masks the
    logits of ids that are no class (gaps in the class map; 0 in classification) and computes
    cross-entropy, ignoring `ignore_index` pixels in segmentation."""

    def __init__(self, net: nn.Module, target_key: str, valid_ids: list[int], mean: list[float], std: list[float],
                 ignore_index: int = 255):
        super().__init__()
        self.net, self.target_key, self.ignore_index = net, target_key, ignore_index
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.valid_ids = list(valid_ids)

    def logits(self, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Class logits of a list of [3,S,S] images in [0, 1], or of one [N,3,S,S] batch (the ONNX graph)."""
        batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        x = (batch - self.mean) / self.std
        out = self.net(x)
        if isinstance(out, dict):  # torchvision segmentation models return {"out": ...}
            out = out["out"]
        if out.dim() == 4 and out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        invalid = torch.ones(out.shape[1], dtype=torch.bool)
        invalid[self.valid_ids] = False
        shape = (1, -1) + (1,) * (out.dim() - 2)
        return out.masked_fill(invalid.view(shape), float("-inf")) if invalid.any() else out

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        logits = self.logits(images)
        if self.training:
            if targets is None:
                raise CvreproError("training needs targets")
            target = torch.stack([t[self.target_key] for t in targets]).long()
            finite = logits.masked_fill(torch.isinf(logits), -1e4)  # -inf * 0 in the CE gradient gives NaN
            return {"ce": F.cross_entropy(finite, target, ignore_index=self.ignore_index)}
        scores = logits.softmax(dim=1)
        return [{"scores": s, self.target_key: s.argmax(dim=0)} for s in scores]


def _torchvision_segmentation(builder):
    # aux_loss off: one loss, the same for every segmentation model
    return lambda cfg, k: builder(weights=None, weights_backbone=None, num_classes=k, aux_loss=None)


SEGMENTATION_BUILDERS = {
    "unet_small": lambda cfg, k: UNet(cfg["widths"], k),
    "lraspp_mobilenet_v3_large": lambda cfg, k: lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=k
    ),
    "deeplabv3_mobilenet_v3_large": _torchvision_segmentation(deeplabv3_mobilenet_v3_large),
}
CLASSIFICATION_BUILDERS = {
    "cnn_small": lambda cfg, k: SmallCNN(cfg["widths"], k),
    "resnet18": lambda cfg, k: resnet18(weights=None, num_classes=k),
}


def build_model(model_cfg: dict, num_classes: int, size: int, mean: list[float], std: list[float],
                task: str, class_ids: list[int] | None = None, ignore_index: int = 255) -> nn.Module:
    """A model of `task` for `num_classes` outputs (category ids 1..num_classes-1; 0 is background).

    class_ids: the category ids that are classes (segmentation adds 0); the others are never predicted."""
    from cvrepro import tasks

    chosen = tasks.get(task)
    name = model_cfg["name"]
    builders = chosen.model_builders()
    if name not in builders:
        other = [t.name for t in map(tasks.get, tasks.names()) if name in t.model_builders()]
        hint = f" ('{name}' is a {other[0]} model)" if other else ""
        raise CvreproError(f"params.yaml: model.name '{name}' is not a {task} model{hint}; "
                           f"choose one of {sorted(builders)}")
    return chosen.build_model(model_cfg, num_classes, size, mean, std, class_ids, ignore_index)


def load_weights(model: nn.Module, model_cfg: dict) -> None:
    """`model.weights`: a local state-dict file loaded into `model` (nothing is downloaded)."""
    weights = model_cfg.get("weights")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise CvreproError(f"params.yaml: model.weights '{weights}' is not a local file (nothing is downloaded)")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
