"""torchvision's detectors (FCOS, RetinaNet, Faster R-CNN, SSDlite) behind the same interface as
YOLOX, so a config can switch family by changing ``model.type``:

- train mode: ``model(images, targets)`` -> dict of loss terms;
- eval mode: ``model(images)`` -> per image ``{"boxes", "scores", "labels"}`` in input pixels,
  labels 0..C-1 (Faster R-CNN and SSD reserve index 0 for background internally; the wrapper
  shifts labels in and out);
- ``export_forward(images)`` -> dense (boxes (B, N, 4), scores (B, N, C)) for the single-stage
  models (Faster R-CNN's proposals are data dependent, so it has no dense form).

Our data pipeline already letterboxes and normalises every image, so torchvision's own
resize/normalise step is replaced by one that only batches (``_BatchOnly``): what the model
sees is exactly what YOLOX sees, and boxes map back to the original image the same way.
Weights are never downloaded (``weights=None``); ``backbone_weights`` takes a local file of
torchvision ImageNet classification weights.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
from loguru import logger
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from aicore.errors import ConfigError, ExportError
from aicore.registry import MODELS


class _BatchOnly(GeneralizedRCNNTransform):
    """torchvision's transform minus resizing and normalisation (done by our pipeline)."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target


def _batch_only(size_divisible: int = 32) -> _BatchOnly:
    return _BatchOnly(min_size=1, max_size=1, image_mean=[0.0, 0.0, 0.0],
                      image_std=[1.0, 1.0, 1.0], size_divisible=size_divisible)


def _load_backbone_weights(body: nn.Module, path: str | None) -> None:
    """Load a torchvision classification state_dict (e.g. resnet50-*.pth) into an FPN body;
    the classifier keys are skipped and MobileNet's ``features.`` prefix is stripped."""
    if not path:
        return
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model.backbone_weights = {path!r}: file not found (weights are never "
                          f"downloaded; give a local torchvision classification .pth)")
    sd = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    own = body.state_dict()
    fitted = {}
    for k, v in sd.items():
        for key in (k, k.removeprefix("features.")):
            if key in own and own[key].shape == v.shape:
                fitted[key] = v
                break
    if not fitted:
        raise ConfigError(f"model.backbone_weights = {path}: no tensor fits the backbone; is it "
                          f"the classification checkpoint of the same architecture?")
    body.load_state_dict(fitted, strict=False)
    logger.info(f"backbone_weights: loaded {len(fitted)}/{len(own)} tensors from {path}")


def fpn_backbone(name: str, weights: str | None, extra: str,
                 returned_layers: Sequence[int] | None = None) -> nn.Module:
    """A ResNet/ResNeXt or MobileNetV3 body with an FPN on top, trainable end to end.

    BatchNorm is kept trainable (torchvision freezes it because its recipes start from
    ImageNet weights; from scratch, frozen statistics would be meaningless)."""
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    blocks = LastLevelP6P7(256, 256) if extra == "p6p7" else LastLevelMaxPool()
    try:
        if name.startswith(("resnet", "resnext", "wide_resnet")):
            net = resnet_fpn_backbone(backbone_name=name, weights=None, norm_layer=nn.BatchNorm2d,
                                      trainable_layers=5, returned_layers=list(returned_layers)
                                      if returned_layers else None, extra_blocks=blocks)
        elif name.startswith("mobilenet_v3"):
            net = mobilenet_backbone(backbone_name=name, weights=None, fpn=True,
                                     norm_layer=nn.BatchNorm2d, trainable_layers=6,
                                     returned_layers=list(returned_layers) if returned_layers
                                     else None, extra_blocks=blocks)
        else:
            raise ConfigError(f"model.backbone = {name!r}: use a torchvision ResNet/ResNeXt "
                              f"(resnet18, resnet50, ...) or mobilenet_v3_large/small")
    except (KeyError, ValueError) as e:
        raise ConfigError(f"model.backbone = {name!r}: {e}") from None
    _load_backbone_weights(net.body, weights)
    return net


def feature_strides(backbone: nn.Module) -> list[int]:
    """Stride of each feature map the backbone returns (one small dry run), so anchors can be
    laid out for any body: ResNet FPNs give 4-5 levels, MobileNet FPNs 3-4."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 256, 256))
    backbone.train(was_training)
    return [256 // int(f.shape[-1]) for f in feats.values()]


def _anchor_generator(anchor_sizes: Sequence[int] | None, strides: Sequence[int],
                      default_factor: int, octave_scales: bool):
    """Anchors with one base size per feature level and aspect ratios 0.5, 1, 2 (RetinaNet adds
    two intermediate scales per octave). Default base size: `default_factor` x the level's
    stride, which reproduces torchvision's defaults for ResNet FPNs (32..512 px, sized for
    images of several hundred pixels); small inputs may want e.g. [16, 32, 64, 128, 256]."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    if anchor_sizes is None:
        anchor_sizes = [default_factor * s for s in strides]
    if len(anchor_sizes) != len(strides):
        raise ConfigError(f"model.anchor_sizes needs {len(strides)} sizes (one per feature level "
                          f"of this backbone, strides {list(strides)}), got {list(anchor_sizes)}")
    sizes = tuple((int(s), int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) if octave_scales
                  else (int(s),) for s in anchor_sizes)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


#: (pattern, replacement) from the layer names of torchvision < 0.13, in which the published
#: COCO weights are stored, to today's (torchvision converts them the same way on load)
_OLD_TORCHVISION_NAMES = [
    (r"^(net\.backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$", r"\1.0.\2"),
    (r"^(net\.rpn\.head\.conv)\.(weight|bias)$", r"\1.0.0.\2"),
    (r"^(net\.head\.(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)$",
     lambda m: f"{m.group(1)}.{int(m.group(2)) // 2}.0.{m.group(3)}"),
]


class TorchvisionDetector(nn.Module):
    """Adapts a torchvision detector to the framework's detector interface (module docstring).

    in_chans 1: the grey channel is repeated to the three channels torchvision's backbones
    take, so grayscale datasets work unchanged.
    """

    def __init__(self, net: nn.Module, kind: str, num_classes: int, in_chans: int,
                 background: bool, score_thresh: float, nms_iou: float) -> None:
        super().__init__()
        self.net, self.kind = net, kind
        # torchvision applies these itself; kept here for the export manifest
        self.score_thresh, self.nms_iou = float(score_thresh), float(nms_iou)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.offset = 1 if background else 0
        self.net.transform = _batch_only(1 if kind == "ssdlite" else 32)

    #: torchvision scores every (candidate, class) pair on its own: one location can yield a
    #: box for each of several classes (the export manifest's "multi_label" candidates)
    multi_label = True

    @property
    def max_det(self) -> int:
        heads = self.net.roi_heads if self.kind == "fasterrcnn" else self.net
        return int(heads.detections_per_img)

    def nms_topk(self, input_size: tuple[int, int]) -> dict | None:
        """How torchvision limits candidates before NMS, for export_forward's dense layout:
        FCOS and RetinaNet keep the `topk_candidates` best (candidate, class) pairs of each
        feature level, SSDlite the best per class."""
        if self.kind == "fasterrcnn":
            return None
        k = int(self.net.topk_candidates)
        if self.kind == "ssdlite":
            return {"per": "class", "k": k}
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            feats = self.net.backbone(torch.zeros(1, 3, *(int(s) for s in input_size)))
        self.net.train(was_training)
        per_loc = self.net.anchor_generator.num_anchors_per_location()[0]
        return {"per": "level", "k": k,
                "level_sizes": [int(f.shape[-2] * f.shape[-1]) * per_loc
                                for f in feats.values()]}

    def adapt_state_dict(self, sd: dict[str, torch.Tensor], input_norm: dict | None = None
                         ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """model.init_from: torchvision's own COCO checkpoints (e.g.
        fasterrcnn_resnet50_fpn_coco-*.pth, a bare state dict of the detector) get this
        wrapper's ``net.`` prefix, and the layer names of older torchvision releases (which
        the published files use) their current spelling. Both conventions normalise the same
        way (RGB, ImageNet mean/std), so no tensor changes."""
        if not sd or any(k.startswith("net.") for k in sd):
            return sd, []
        own = self.state_dict()
        out, renamed = {}, 0
        for k, v in sd.items():
            key = f"net.{k}"
            if key not in own:
                for old, new in _OLD_TORCHVISION_NAMES:
                    candidate = re.sub(old, new, key)
                    if candidate in own:
                        key, renamed = candidate, renamed + 1
                        break
            out[key] = v
        notes = [f"torchvision {self.kind} checkpoint: {len(sd)} tensors under net."
                 + (f" ({renamed} renamed from older torchvision layer names)" if renamed else "")]
        return out, notes

    def _rgb(self, images: torch.Tensor) -> torch.Tensor:
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        images = self._rgb(images)
        if self.training:
            if targets is None:
                raise ValueError(f"{self.kind} in train mode needs targets")
            tv_targets = [{"boxes": t["boxes"].to(images.device).float(),
                           "labels": t["labels"].to(images.device).long() + self.offset}
                          for t in targets]
            losses = self.net(list(images), tv_targets)
            return {(k if k.startswith("loss") else f"loss_{k}"): v for k, v in losses.items()}
        out = self.net(list(images))
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.offset}
                for o in out]

    def export_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense decoded boxes and per-class scores, before thresholding and NMS, computed as
        torchvision's own post-processing computes them."""
        if self.kind == "fasterrcnn":
            raise ExportError("Faster R-CNN cannot be exported as dense boxes + scores: its "
                              "second stage runs on data-dependent RPN proposals. Export YOLOX, "
                              "FCOS, RetinaNet or SSDlite instead")
        images = self._rgb(images)
        features = self.net.backbone(images)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        feats = list(features.values())
        head = self.net.head(feats)
        hw = (int(images.shape[-2]), int(images.shape[-1]))
        # every image has the same (input) size, so one set of anchors serves the whole batch
        anchors = self.net.anchor_generator(ImageList(images[:1], [hw]), [f[:1] for f in feats])[0]
        reg = head["bbox_regression"]
        if self.kind == "fcos":
            boxes = self.net.box_coder.decode(reg, anchors[None])
            scores = torch.sqrt(head["cls_logits"].sigmoid() * head["bbox_ctrness"].sigmoid())
        else:
            flat = self.net.box_coder.decode_single(
                reg.reshape(-1, 4), anchors[None].expand_as(reg).reshape(-1, 4))
            boxes = flat.reshape(reg.shape)
            if self.kind == "retinanet":
                scores = head["cls_logits"].sigmoid()
            else:  # ssd: softmax over background + classes; drop the background column
                scores = head["cls_logits"].softmax(-1)[..., 1:]
        return box_ops.clip_boxes_to_image(boxes, hw), scores


@MODELS.register("FCOS")
def fcos(num_classes: int, in_chans: int = 3, backbone: str = "resnet50",
         backbone_weights: str | None = None, score_thresh: float = 0.05, nms_iou: float = 0.6,
         max_det: int = 100, center_sampling_radius: float = 1.5) -> nn.Module:
    """torchvision FCOS (anchor-free, per-pixel with centre-ness) on a ResNet/MobileNet FPN."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    body = fpn_backbone(backbone, backbone_weights, "p6p7", [2, 3, 4])
    # FCOS's "anchors" are the feature-map locations; their size must equal the stride
    strides = feature_strides(body)
    points = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    net = FCOS(body, num_classes, anchor_generator=points, score_thresh=score_thresh,
               nms_thresh=nms_iou, detections_per_img=max_det,
               center_sampling_radius=center_sampling_radius)
    return TorchvisionDetector(net, "fcos", num_classes, in_chans, background=False,
                               score_thresh=score_thresh, nms_iou=nms_iou)


@MODELS.register("RetinaNet")
def retinanet(num_classes: int, in_chans: int = 3, backbone: str = "resnet50",
              backbone_weights: str | None = None, score_thresh: float = 0.05,
              nms_iou: float = 0.5, max_det: int = 100,
              anchor_sizes: Sequence[int] | None = None) -> nn.Module:
    """torchvision RetinaNet (anchors + focal loss) on a ResNet/MobileNet FPN (P3-P7)."""
    from torchvision.models.detection import RetinaNet
    body = fpn_backbone(backbone, backbone_weights, "p6p7", [2, 3, 4])
    anchors = _anchor_generator(anchor_sizes, feature_strides(body), 4, octave_scales=True)
    net = RetinaNet(body, num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                    nms_thresh=nms_iou, detections_per_img=max_det)
    return TorchvisionDetector(net, "retinanet", num_classes, in_chans, background=False,
                               score_thresh=score_thresh, nms_iou=nms_iou)


@MODELS.register("FasterRCNN")
def faster_rcnn(num_classes: int, in_chans: int = 3, backbone: str = "resnet50",
                backbone_weights: str | None = None, score_thresh: float = 0.05,
                nms_iou: float = 0.5, max_det: int = 100,
                anchor_sizes: Sequence[int] | None = None, proposals: int = 1000,
                roi_samples: int = 512) -> nn.Module:
    """torchvision Faster R-CNN (two-stage: RPN proposals, then RoIAlign + box head) on an FPN.

    proposals: RPN proposals kept per image after NMS (at test time; twice as many while
    training, as torchvision's 1000/2000 defaults); roi_samples: proposals per image that train
    the box head. The box head runs a 1024-wide MLP on every proposal, so on small images with
    a few objects, a few hundred proposals cost a fraction and lose nothing."""
    from torchvision.models.detection import FasterRCNN
    body = fpn_backbone(backbone, backbone_weights, "pool")
    anchors = _anchor_generator(anchor_sizes, feature_strides(body), 8, octave_scales=False)
    net = FasterRCNN(body, num_classes + 1, rpn_anchor_generator=anchors,
                     box_score_thresh=score_thresh, box_nms_thresh=nms_iou,
                     box_detections_per_img=max_det,
                     rpn_pre_nms_top_n_train=2 * proposals, rpn_post_nms_top_n_train=2 * proposals,
                     rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals,
                     box_batch_size_per_image=roi_samples)
    return TorchvisionDetector(net, "fasterrcnn", num_classes, in_chans, background=True,
                               score_thresh=score_thresh, nms_iou=nms_iou)


@MODELS.register("SSDlite")
def ssdlite(num_classes: int, in_chans: int = 3, score_thresh: float = 0.01,
            nms_iou: float = 0.55, max_det: int = 100) -> nn.Module:
    """torchvision SSDlite with a MobileNetV3-Large body: the lightest of the four, anchors
    scaled to the input size (so any data.input_size works). Random init only: torchvision
    rebuilds the MobileNet tail for SSDlite, so ImageNet classification weights do not fit."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    net = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                        num_classes=num_classes + 1, score_thresh=score_thresh,
                                        nms_thresh=nms_iou, detections_per_img=max_det,
                                        norm_layer=partial(nn.BatchNorm2d, eps=0.001,
                                                           momentum=0.03))
    return TorchvisionDetector(net, "ssdlite", num_classes, in_chans, background=True,
                               score_thresh=score_thresh, nms_iou=nms_iou)
