"""The networks and their builders, chosen by `model.name` in params.yaml, one family per task
(each task module says which family is its own: `Task.model_builders`).

Every model keeps torchvision's detection calling convention, so one engine trains
them all: in train mode `model(images, targets)` returns a dict of losses, in eval
mode a list of per-image dicts.
  detection: torchvision detectors; targets {boxes, labels}; outputs {boxes, scores, labels}
  segmentation: targets {mask}; outputs {scores [K,S,S] softmax, mask [S,S]}
  classification: targets {label}; outputs {scores [K] softmax, label}
Labels are the dataset's category ids (0 = background in segmentation). Nothing is
downloaded: stock architectures start from scratch unless `model.weights_backbone` (a
pretrained backbone) or `model.weights` (a whole model, any class count) names a local
state-dict file or a file of torch's hub cache (`load_weights`).

Builders read `model` of the predictor spec (models/preprocessing.json), a record that a release of any age
may hold, so as the mapping it is, not as today's typed config (config/schema.py).
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

from cvrepro.config.params import ANCHOR_SCALE, IGNORE_INDEX
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
    scale = float(cfg.get("anchor_scale", ANCHOR_SCALE))
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
                 ignore_index: int = IGNORE_INDEX):
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


INIT_KEYS = ("weights", "weights_backbone", "freeze")  # how training starts; nothing a predictor needs


def architecture_only(model_cfg: dict) -> dict:
    """`model_cfg` without the keys that only say how training starts (pretrained files, freezing):
    a predictor rebuilds the architecture and loads models/model.pt, and never needs those files."""
    return {k: v for k, v in model_cfg.items() if k not in INIT_KEYS}


def weights_file(value: str, key: str) -> Path:
    """A local state-dict file: a path, or `hub:<file name>` in torch's hub cache (where torchvision
    keeps the weights it downloaded: `torch.hub.get_dir()/checkpoints`). Nothing is ever downloaded."""
    if str(value).startswith("hub:"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / str(value)[4:]
        missing = f"is not in the torch hub cache ({path.parent})"
    else:
        path, missing = Path(value), "is not a local file"
    if not path.is_file():
        raise CvreproError(f"params.yaml: model.{key} '{value}' {missing}; nothing is downloaded "
                           "(README, 'Pretrained backbones')")
    return path


def _state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which
        raise CvreproError(f"params.yaml: model.{key} '{path}' is not a torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a cvrepro checkpoint.pt
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CvreproError(f"params.yaml: model.{key} '{path}' is not a state dict of tensors")
    return state


def backbone_of(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """The feature extractor that pretrained weights fill, and the prefixes of its head to leave out.

    Detection: the torchvision `backbone.body` (ResNet, without the FPN) or the whole `backbone`
    (fcos_tiny: conv stages and FPN; SSDlite: MobileNet features). Segmentation: the network's
    `backbone`, or the U-Net's down path. Classification: the network without its last layer."""
    net = model.net if isinstance(model, DenseTask) else model
    if hasattr(net, "backbone"):
        return getattr(net.backbone, "body", net.backbone), ()
    if isinstance(net, UNet):
        return net.down, ()
    if isinstance(net, SmallCNN):
        return net.features, ()
    if hasattr(net, "fc"):  # torchvision ResNet
        return net, ("fc.",)
    raise CvreproError(f"{type(net).__name__}: this model has no backbone that pretrained weights can fill")


def _strip_to(state: dict[str, torch.Tensor], want: set[str]) -> dict[str, torch.Tensor]:
    """`state` with the key prefix removed that makes the most keys match `want` (a backbone saved on
    its own, inside a whole detector `backbone.body.`, or as torchvision's `features.`)."""
    prefixes = {""} | {k[: i + 1] for k in state for i, c in enumerate(k) if c == "."}
    best = max(sorted(prefixes), key=lambda p: sum(k[len(p):] in want for k in state if k.startswith(p)))
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best) and k[len(best):] in want}


def load_backbone(model: nn.Module, value: str) -> int:
    """`model.weights_backbone`: fill the backbone from a state dict; every backbone tensor must be
    there with its shape (a clear error otherwise). Returns the number of tensors loaded."""
    backbone, head = backbone_of(model)
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith(head)}
    state = _strip_to(_state_dict(weights_file(value, "weights_backbone"), "weights_backbone"), set(own))
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in state if state[k].shape != own[k].shape)
    if missing or wrong:
        what = f"missing {missing[:3]}" if missing else f"shape differs for {wrong[:3]}"
        raise CvreproError(f"params.yaml: model.weights_backbone '{value}' does not fit the backbone of "
                           f"model '{type(model).__name__}' ({len(missing) + len(wrong)} of {len(own)} tensors: {what})")
    backbone.load_state_dict(state, strict=not head)
    return len(state)


def load_weights(model: nn.Module, model_cfg: dict) -> None:
    """How training starts (nothing is downloaded), in this order:

    `model.weights_backbone`: pretrained backbone weights (`load_backbone`);
    `model.weights`: a whole-model state dict (a local file or `hub:` name). Tensors whose shape
    differs (the class-count-dependent layers of the head) keep their initialisation, with a line on
    stderr; any other mismatch (missing or unknown keys, a backbone tensor of another shape) is an error;
    `model.freeze`: the first N top-level blocks of the backbone stop learning (`freeze_backbone`)."""
    import sys

    if model_cfg.get("weights_backbone"):
        load_backbone(model, model_cfg["weights_backbone"])
    if model_cfg.get("weights"):
        value = model_cfg["weights"]
        state = _state_dict(weights_file(value, "weights"), "weights")
        own = model.state_dict()
        missing, unknown = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unknown:
            raise CvreproError(f"params.yaml: model.weights '{value}' is not a state dict of this model "
                               f"(missing {missing[:3]}, unknown {unknown[:3]}); for a backbone alone use "
                               "model.weights_backbone")
        other = sorted(k for k in state if state[k].shape != own[k].shape)
        backbone, _ = backbone_of(model)
        in_backbone = {id(t) for t in backbone.state_dict(keep_vars=True).values()}
        own_vars = model.state_dict(keep_vars=True)
        if any(id(own_vars[k]) in in_backbone for k in other):
            raise CvreproError(f"params.yaml: model.weights '{value}': backbone tensors differ in shape "
                               f"({[k for k in other if id(own_vars[k]) in in_backbone][:3]}): another architecture")
        model.load_state_dict({k: v for k, v in state.items() if k not in other}, strict=not other)
        if other:
            print(f"model.weights: {len(other)} head tensors have another shape (another class count) and "
                  f"start from scratch: {', '.join(other)}", file=sys.stderr)
    freeze_backbone(model, int(model_cfg.get("freeze") or 0))


def freeze_backbone(model: nn.Module, blocks: int) -> list[str]:
    """Stop the first `blocks` top-level modules of the backbone from learning: no gradients, and their
    BatchNorm layers keep the pretrained statistics (eval mode even while the model trains).
    Returns the frozen blocks' names."""
    if blocks <= 0:
        return []
    backbone, _ = backbone_of(model)
    children = list(backbone.named_children())
    if blocks > len(children):
        raise CvreproError(f"params.yaml: model.freeze {blocks}: the backbone has only {len(children)} blocks "
                           f"({', '.join(n for n, _ in children)})")
    for _, block in children[:blocks]:
        block.requires_grad_(False)
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_keep_eval)
    return [n for n, _ in children[:blocks]]


def _keep_eval(module: nn.Module, args) -> None:
    module.train(False)  # a frozen block's BatchNorm never updates its running statistics


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
