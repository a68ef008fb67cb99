"""YOLOX: an anchor-free one-stage detector, written out in full.

    image -> backbone (CSPDarknet, or any timm features_only model) -> C3, C4, C5 (strides 8/16/32)
          -> PAFPN neck (top-down + bottom-up fusion) -> P3, P4, P5
          -> decoupled head per level: class logits | box (4) + objectness (1)

Every cell of every level is one candidate ("anchor point"); the box branch predicts the
centre offset from the cell and the log of width/height in units of the stride. During
training SimOTA decides which candidates learn which ground-truth box (see ``simota_assign``);
the loss is IoU loss on the boxes, BCE objectness on all candidates and IoU-aware BCE classes on
the positives (+ an L1 term on the raw box outputs in the final, no-mosaic epochs).

Sizes follow the YOLOX paper's depth/width multipliers (nano .. x); ``depth`` and ``width`` can
also be given directly.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import (box_iou, clip_boxes_to_image, complete_box_iou_loss,
                             generalized_box_iou_loss)

from aicore.errors import ConfigError
from aicore.registry import MODELS
from aicore.tasks.detection.boxes import cxcywh_to_xyxy, postprocess, xyxy_to_cxcywh

#: name -> (depth multiplier, width multiplier, depthwise convolutions)
SIZES: dict[str, tuple[float, float, bool]] = {
    "nano": (0.33, 0.25, True), "tiny": (0.33, 0.375, False), "s": (0.33, 0.50, False),
    "m": (0.67, 0.75, False), "l": (1.0, 1.0, False), "x": (1.33, 1.25, False),
}
ALIASES = {"small": "s", "medium": "m", "large": "l"}


# ------------------------------------------------------------------------------------------
# building blocks


class ConvBNAct(nn.Module):
    """Conv -> BatchNorm -> SiLU, 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2, groups=groups, bias=False)
        # YOLOX's BN settings: small eps, slow-moving statistics for noisy small batches
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise k x k followed by pointwise 1 x 1: about k*k times fewer multiply-adds."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.dconv = ConvBNAct(cin, cin, k, s, groups=cin)
        self.pconv = ConvBNAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def conv3(cin: int, cout: int, s: int, depthwise: bool) -> nn.Module:
    return DWConv(cin, cout, 3, s) if depthwise else ConvBNAct(cin, cout, 3, s)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 1)
        self.conv2 = conv3(cout, cout, 1, depthwise)
        self.add = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.add else y


class CSPLayer(nn.Module):
    """Cross Stage Partial block: half the channels go through n bottlenecks, half skip them,
    then both are concatenated and mixed. Same accuracy as a plain stack for less compute, and
    a shorter gradient path."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True,
                 depthwise: bool = False) -> None:
        super().__init__()
        hidden = cout // 2
        self.conv1 = ConvBNAct(cin, hidden, 1)
        self.conv2 = ConvBNAct(cin, hidden, 1)
        self.blocks = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, depthwise)
                                      for _ in range(n)])
        self.conv3 = ConvBNAct(2 * hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.blocks(self.conv1(x)), self.conv2(x)], dim=1))


class SPPBottleneck(nn.Module):
    """Max-pools of several sizes side by side: a wide receptive field at stride 32 cheaply."""

    def __init__(self, cin: int, cout: int, kernels: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = cin // 2
        self.conv1 = ConvBNAct(cin, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvBNAct(hidden * (len(kernels) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], dim=1))


class Focus(nn.Module):
    """Space-to-depth (each 2x2 patch becomes 4 channels) then a conv: halves the resolution
    without discarding pixels."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin * 4, cout, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                                    x[..., 1::2, 1::2]], dim=1))


# ------------------------------------------------------------------------------------------
# backbones: forward(x) -> [C3, C4, C5]; attributes out_channels and strides


@MODELS.register("CSPDarknet")
class CSPDarknet(nn.Module):
    """YOLOX's backbone; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self, depth: float = 0.33, width: float = 0.25, depthwise: bool = False,
                 in_chans: int = 3) -> None:
        super().__init__()
        c = max(8, int(round(width * 64)))
        n = max(round(depth * 3), 1)
        self.stem = Focus(in_chans, c, 3)
        self.dark2 = nn.Sequential(conv3(c, 2 * c, 2, depthwise),
                                   CSPLayer(2 * c, 2 * c, n, depthwise=depthwise))
        self.dark3 = nn.Sequential(conv3(2 * c, 4 * c, 2, depthwise),
                                   CSPLayer(4 * c, 4 * c, 3 * n, depthwise=depthwise))
        self.dark4 = nn.Sequential(conv3(4 * c, 8 * c, 2, depthwise),
                                   CSPLayer(8 * c, 8 * c, 3 * n, depthwise=depthwise))
        self.dark5 = nn.Sequential(conv3(8 * c, 16 * c, 2, depthwise),
                                   SPPBottleneck(16 * c, 16 * c),
                                   CSPLayer(16 * c, 16 * c, n, shortcut=False, depthwise=depthwise))
        self.out_channels = [4 * c, 8 * c, 16 * c]
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        return [c3, c4, self.dark5(c4)]


@MODELS.register("TimmFeatures")
class TimmFeatures(nn.Module):
    """Any timm model as a detection backbone (``features_only``): the last three feature
    levels, which must have strides 8, 16 and 32 (true for ResNets, ConvNeXt, EfficientNet,
    MobileNet, ...). ``pretrained`` may be a local weights file (no network needed)."""

    def __init__(self, name: str, in_chans: int = 3, pretrained: bool | str = False,
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        from aicore.backbones import create_timm
        kwargs: dict[str, Any] = {"features_only": True}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.body = create_timm(name, pretrained, in_chans, **kwargs)
        info = self.body.feature_info
        self.levels = list(range(len(info.channels())))[-3:]
        self.out_channels = [info.channels()[i] for i in self.levels]
        self.strides = [info.reduction()[i] for i in self.levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.levels]


# ------------------------------------------------------------------------------------------
# neck and head


class PAFPN(nn.Module):
    """Path-aggregation FPN. Top-down: deep, semantic features are upsampled and concatenated
    into the shallower levels (small objects get context). Bottom-up: the refined shallow
    features are strided back down (large objects get precise localisation)."""

    def __init__(self, in_channels: Sequence[int], width: float, depth: float,
                 depthwise: bool) -> None:
        super().__init__()
        c3, c4, c5 = (max(16, int(round(width * c))) for c in (256, 512, 1024))
        n = max(round(depth * 3), 1)
        # a backbone with other channel counts (timm) is projected to the neck's widths
        self.inputs = nn.ModuleList(
            nn.Identity() if cin == c else ConvBNAct(cin, c, 1)
            for cin, c in zip(in_channels, (c3, c4, c5)))
        self.lateral5 = ConvBNAct(c5, c4, 1)
        self.td4 = CSPLayer(2 * c4, c4, n, shortcut=False, depthwise=depthwise)
        self.reduce4 = ConvBNAct(c4, c3, 1)
        self.td3 = CSPLayer(2 * c3, c3, n, shortcut=False, depthwise=depthwise)
        self.down3 = conv3(c3, c3, 2, depthwise)
        self.bu4 = CSPLayer(2 * c3, c4, n, shortcut=False, depthwise=depthwise)
        self.down4 = conv3(c4, c4, 2, depthwise)
        self.bu5 = CSPLayer(2 * c4, c5, n, shortcut=False, depthwise=depthwise)
        self.out_channels = [c3, c4, c5]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x3, x4, x5 = (proj(f) for proj, f in zip(self.inputs, feats))
        l5 = self.lateral5(x5)
        t4 = self.td4(torch.cat([F.interpolate(l5, size=x4.shape[-2:], mode="nearest"), x4], 1))
        r4 = self.reduce4(t4)
        p3 = self.td3(torch.cat([F.interpolate(r4, size=x3.shape[-2:], mode="nearest"), x3], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), r4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), l5], 1))
        return [p3, p4, p5]


class DecoupledHead(nn.Module):
    """Per level: a 1x1 stem, then separate class and box towers. Classification wants
    translation-invariant features and localisation wants position-sensitive ones; sharing one
    tower makes them compete (the YOLOX paper's reason for decoupling)."""

    def __init__(self, num_classes: int, in_channels: Sequence[int], width: float,
                 depthwise: bool, prior_prob: float = 0.01) -> None:
        super().__init__()
        hidden = max(16, int(round(256 * width)))
        self.num_classes = num_classes
        self.stems = nn.ModuleList(ConvBNAct(c, hidden, 1) for c in in_channels)
        tower = lambda: nn.Sequential(conv3(hidden, hidden, 1, depthwise),  # noqa: E731
                                      conv3(hidden, hidden, 1, depthwise))
        self.cls_towers = nn.ModuleList(tower() for _ in in_channels)
        self.reg_towers = nn.ModuleList(tower() for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)
        # start every candidate at ~1% confidence: otherwise the many background cells flood
        # the first updates with large losses (the focal-loss paper's prior initialisation)
        bias = -math.log((1 - prior_prob) / prior_prob)
        for conv in [*self.cls_preds, *self.obj_preds]:
            nn.init.constant_(conv.bias, bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """-> per level (B, 4 + 1 + C, H, W): box, objectness and class logits."""
        outs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            reg = self.reg_towers[k](x)
            outs.append(torch.cat([self.reg_preds[k](reg), self.obj_preds[k](reg),
                                   self.cls_preds[k](self.cls_towers[k](x))], dim=1))
        return outs


# ------------------------------------------------------------------------------------------
# SimOTA


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i] (xyxy), without the N x N matrix box_iou would build."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area_a + area_b - inter + 1e-7)


@torch.no_grad()
def simota_assign(pred_boxes: torch.Tensor, cls_logits: torch.Tensor, obj_logits: torch.Tensor,
                  centers: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
                  gt_labels: torch.Tensor, num_classes: int, center_radius: float = 2.5,
                  candidate_topk: int = 10, iou_cost_weight: float = 3.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match the candidates of one image to its G ground-truth boxes.

    pred_boxes (N, 4) xyxy, cls_logits (N, C), obj_logits (N,), centers (N, 2) cell centres
    and strides (N,) in input pixels; gt_boxes (G, 4) xyxy, gt_labels (G,).

    1. Geometry prior: a candidate can only learn a box if its cell centre lies inside the box
       or within ``center_radius`` strides of the box centre; cells in both regions are strongly
       preferred (a huge cost is added to the others).
    2. Cost of learning box g at candidate n = classification BCE of the predicted
       score against g's class + ``iou_cost_weight`` * -log IoU(prediction n, box g). The
       prediction itself decides what is easy to learn: optimal-transport assignment.
    3. Dynamic k: box g takes its k_g cheapest candidates, where k_g = sum of its top-10 IoUs
       (at least 1). Well-covered boxes get many positives, awkward ones a few.
    4. A candidate claimed by several boxes keeps only the cheapest one.

    Returns fg_mask (N,) bool, matched_gt (F,) index into gt for each positive (in candidate
    order), matched_iou (F,) IoU of each positive's prediction with its box (the class target
    is scaled by it, so confidence tracks localisation quality).
    """
    N, G = pred_boxes.shape[0], gt_boxes.shape[0]
    device = pred_boxes.device
    cx, cy = centers[:, 0][None], centers[:, 1][None]  # (1, N)
    x1, y1, x2, y2 = (gt_boxes[:, i:i + 1] for i in range(4))  # (G, 1)
    in_box = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
    radius = center_radius * strides[None]
    in_center = ((cx - gcx).abs() < radius) & ((cy - gcy).abs() < radius)
    candidate = (in_box | in_center).any(0)
    fg_mask = torch.zeros(N, dtype=torch.bool, device=device)
    if not candidate.any():
        return fg_mask, gt_labels.new_zeros(0), pred_boxes.new_zeros(0)
    both = (in_box & in_center)[:, candidate]  # (G, M)
    boxes = pred_boxes[candidate].float()
    ious = box_iou(gt_boxes.float(), boxes)  # (G, M)
    scores = (cls_logits[candidate].float().sigmoid() *
              obj_logits[candidate].float().sigmoid()[:, None]).sqrt()  # (M, C)
    onehot = F.one_hot(gt_labels, num_classes).float()  # (G, C)
    M = scores.shape[0]
    cls_cost = F.binary_cross_entropy(scores[None].expand(G, M, -1).clamp(1e-6, 1 - 1e-6),
                                      onehot[:, None].expand(G, M, -1),
                                      reduction="none").sum(-1)
    cost = cls_cost + iou_cost_weight * -torch.log(ious + 1e-8) + 1e5 * (~both).float()

    k = min(candidate_topk, M)
    dynamic_k = ious.topk(k, dim=1).values.sum(1).int().clamp(min=1)  # (G,)
    rank = cost.argsort(dim=1).argsort(dim=1)  # rank of each candidate within its box's row
    matching = rank < dynamic_k[:, None]
    shared = matching.sum(0) > 1
    if shared.any():
        cheapest = cost[:, shared].argmin(0)
        matching[:, shared] = False
        matching[cheapest, shared.nonzero(as_tuple=True)[0]] = True
    fg = matching.any(0)  # (M,)
    matched_gt = matching[:, fg].float().argmax(0)
    matched_iou = (matching.float() * ious).sum(0)[fg]
    fg_mask[candidate] = fg
    return fg_mask, matched_gt, matched_iou


# ------------------------------------------------------------------------------------------
# the detector


def parse_size(size: str) -> tuple[float, float, bool]:
    key = ALIASES.get(str(size).lower(), str(size).lower())
    if key not in SIZES:
        raise ConfigError(f"model.size = {size!r}: choose one of {', '.join(SIZES)} (or set "
                          f"model.depth and model.width)")
    return SIZES[key]


@MODELS.register("YOLOX")
class YOLOX(nn.Module):
    """YOLOX detector. Train mode: ``model(images, targets)`` -> dict of weighted loss terms.
    Eval mode: ``model(images)`` -> per image ``{"boxes", "scores", "labels"}`` in input pixels
    after score threshold and class-aware NMS. ``export_forward`` gives the dense decoded
    boxes (B, N, 4) and class scores (B, N, C) without NMS.

    size: nano | tiny | s | m | l | x (depth/width/depthwise override it);
    backbone: null = CSPDarknet of that size, or a component such as
    ``{"type": "TimmFeatures", "name": "resnet18"}``;
    score_thresh / nms_iou / max_det: inference post-processing (a low score_thresh suits mAP);
    iou_loss: "giou" | "ciou" | "iou"; the weights scale the loss terms (YOLOX uses 5 for IoU).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, size: str = "nano",
                 depth: float | None = None, width: float | None = None,
                 depthwise: bool | None = None, backbone: dict | None = None,
                 score_thresh: float = 0.01, nms_iou: float = 0.65, max_det: int = 100,
                 iou_loss: str = "giou", iou_weight: float = 5.0, obj_weight: float = 1.0,
                 cls_weight: float = 1.0, l1_weight: float = 1.0, center_radius: float = 2.5,
                 candidate_topk: int = 10) -> None:
        super().__init__()
        d, w, dw = parse_size(size)
        d = float(depth) if depth is not None else d
        w = float(width) if width is not None else w
        dw = bool(depthwise) if depthwise is not None else dw
        if iou_loss not in ("giou", "ciou", "iou"):
            raise ConfigError(f"model.iou_loss = {iou_loss!r}: use \"giou\", \"ciou\" or \"iou\"")
        if backbone:
            from aicore import config as C
            self.backbone = C.build(backbone, MODELS, "model.backbone", in_chans=in_chans)
            for attr in ("out_channels", "strides"):
                if not hasattr(self.backbone, attr):
                    raise ConfigError(f"model.backbone {backbone.get('type')} is not a detection "
                                      f"backbone (it has no '{attr}'); use CSPDarknet or "
                                      f"TimmFeatures")
        else:
            self.backbone = CSPDarknet(d, w, dw, in_chans)
        self.strides = [int(s) for s in self.backbone.strides]
        if len(self.strides) != 3:
            raise ConfigError(f"model.backbone gives {len(self.strides)} feature levels; YOLOX "
                              f"needs 3 (strides 8, 16, 32)")
        self.neck = PAFPN(self.backbone.out_channels, w, d, dw)
        self.head = DecoupledHead(num_classes, self.neck.out_channels, w, dw)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.score_thresh, self.nms_iou = float(score_thresh), float(nms_iou)
        self.max_det = int(max_det)
        self.iou_loss = iou_loss
        self.weights = {"iou": float(iou_weight), "obj": float(obj_weight),
                        "cls": float(cls_weight), "l1": float(l1_weight)}
        self.center_radius, self.candidate_topk = float(center_radius), int(candidate_topk)
        #: the extra L1 box loss, switched on by CloseMosaicHook for the final epochs
        self.use_l1 = False

    def adapt_state_dict(self, sd: dict[str, torch.Tensor], input_norm: dict | None = None
                         ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """model.init_from: an official YOLOX checkpoint is renamed to our layers (and its
        stem converted to our input normalisation); anything else passes unchanged."""
        from aicore.tasks.detection import yolox_official
        if yolox_official.is_official(sd):
            return yolox_official.convert(sd, self.in_chans, input_norm)
        return sd, []

    # -- shared pieces -----------------------------------------------------------------------

    def _raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.neck(self.backbone(images)))

    def _flatten(self, outputs: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> raw (B, N, 5 + C), grid cell coordinates (N, 2), stride per candidate (N, 1)."""
        raws, grids, strides = [], [], []
        for out, s in zip(outputs, self.strides):
            h, w = out.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, device=out.device),
                                    torch.arange(w, device=out.device), indexing="ij")
            grids.append(torch.stack([xs, ys], -1).reshape(-1, 2))
            strides.append(torch.full((h * w, 1), float(s), device=out.device))
            raws.append(out.flatten(2).transpose(1, 2))
        return torch.cat(raws, 1), torch.cat(grids).float(), torch.cat(strides)

    @staticmethod
    def _decode(raw: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        """Raw box outputs -> cx, cy, w, h in input pixels. exp() is capped so a wild early
        prediction cannot overflow to inf (e^10 strides is far beyond any image)."""
        xy = (raw[..., :2] + grid) * stride
        wh = torch.exp(raw[..., 2:4].clamp(max=10.0)) * stride
        return torch.cat([xy, wh], -1)

    def decode(self, outputs: list[torch.Tensor], hw: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> boxes (B, N, 4) xyxy input pixels clipped to the (h, w) input, scores (B, N, C)
        = objectness * class probability. Clipping also keeps the coordinates of hopeless
        background candidates (exp of a large raw value) bounded, so float rounding stays at
        the 1e-5 pixel level in exported graphs too."""
        raw, grid, stride = self._flatten(outputs)
        raw = raw.float()
        boxes = clip_boxes_to_image(cxcywh_to_xyxy(self._decode(raw, grid, stride)), hw)
        scores = raw[..., 4:5].sigmoid() * raw[..., 5:].sigmoid()
        return boxes, scores

    # -- entry points ------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        outputs = self._raw(images)
        if self.training:
            if targets is None:
                raise ValueError("YOLOX in train mode needs targets (call model.eval() to predict)")
            return self.loss(outputs, targets)
        boxes, scores = self.decode(outputs, images.shape[-2:])
        return postprocess(boxes, scores, self.score_thresh, self.nms_iou, self.max_det)

    def predict_with_loss(self, images: torch.Tensor, targets: list[dict]
                          ) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """Eval-mode detections and the training loss computed from the same forward pass:
        the validation loss without a second pass (YOLOX's layers give the same outputs in
        both modes once normalisation is frozen, so the loss equals the training-mode one)."""
        outputs = self._raw(images)
        boxes, scores = self.decode(outputs, images.shape[-2:])
        return (postprocess(boxes, scores, self.score_thresh, self.nms_iou, self.max_det),
                self.loss(outputs, targets))

    def export_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self._raw(images), images.shape[-2:])

    # -- training ----------------------------------------------------------------------------

    def loss(self, outputs: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        raw, grid, stride = self._flatten(outputs)
        raw = raw.float()  # losses in fp32 even under autocast
        pred = self._decode(raw, grid, stride)  # (B, N, 4) cxcywh
        pred_xyxy = cxcywh_to_xyxy(pred)
        centers = (grid + 0.5) * stride
        B, N = raw.shape[:2]
        obj_target = torch.zeros(B, N, device=raw.device)
        fg_masks, cls_targets, box_targets, l1_targets = [], [], [], []
        for b in range(B):
            gt_boxes = targets[b]["boxes"].to(raw.device).float()
            gt_labels = targets[b]["labels"].to(raw.device).long()
            if len(gt_boxes) == 0:  # background image: every candidate is negative
                fg_masks.append(torch.zeros(N, dtype=torch.bool, device=raw.device))
                continue
            fg, matched, iou = simota_assign(
                pred_xyxy[b].detach(), raw[b, :, 5:].detach(), raw[b, :, 4].detach(), centers,
                stride[:, 0], gt_boxes, gt_labels, self.num_classes, self.center_radius,
                self.candidate_topk)
            fg_masks.append(fg)
            obj_target[b, fg] = 1.0
            cls_targets.append(F.one_hot(gt_labels[matched], self.num_classes).float() *
                               iou[:, None])
            box_targets.append(gt_boxes[matched])
            if self.use_l1:
                g = xyxy_to_cxcywh(gt_boxes[matched])
                s, cell = stride[fg], grid[fg]
                l1_targets.append(torch.cat([g[:, :2] / s - cell,
                                             torch.log(g[:, 2:] / s + 1e-8)], 1))
        fg_mask = torch.stack(fg_masks)
        num_fg = max(1.0, float(fg_mask.sum()))
        loss_obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target,
                                                      reduction="sum") / num_fg
        parts = {"loss_obj": self.weights["obj"] * loss_obj}
        if box_targets:
            box_t, cls_t = torch.cat(box_targets), torch.cat(cls_targets)
            pb = pred_xyxy[fg_mask]
            if self.iou_loss == "giou":
                l_iou = generalized_box_iou_loss(pb, box_t, reduction="sum")
            elif self.iou_loss == "ciou":
                l_iou = complete_box_iou_loss(pb, box_t, reduction="sum")
            else:  # YOLOX's original 1 - IoU^2
                l_iou = (1 - paired_iou(pb, box_t) ** 2).sum()
            l_cls = F.binary_cross_entropy_with_logits(raw[..., 5:][fg_mask], cls_t,
                                                       reduction="sum")
        else:  # no box in the whole batch: zero-valued terms that still touch every output,
            # so DDP sees a gradient (of zero) for the class and box branches too
            l_iou = l_cls = raw.sum() * 0.0
        parts["loss_iou"] = self.weights["iou"] * l_iou / num_fg
        parts["loss_cls"] = self.weights["cls"] * l_cls / num_fg
        if self.use_l1:
            l1 = (F.l1_loss(raw[..., :4][fg_mask], torch.cat(l1_targets), reduction="sum")
                  if l1_targets else raw.sum() * 0.0)
            parts["loss_l1"] = self.weights["l1"] * l1 / num_fg
        return parts
