"""Detection's inference protocol: letterboxed input with its scale in the Meta, boxes mapped
back to original pixels, drawn boxes, detections.json, and the export (modules and manifest
recipe from aicore/tasks/detection/export.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from torch import nn

from aicore.deploy.results import DetectionResult
from aicore.engine.protocol import ExportSpec, Meta, TaskProtocol
from aicore.errors import ExportError
from aicore.tasks.detection.boxes import PAD_VALUE, boxes_to_original, letterbox

#: demo draws and lists detections from this score up, unless demo.score_thresh says otherwise
DEMO_SCORE_THRESH = 0.3


class DetectionProtocol(TaskProtocol):
    task = "detection"

    def __init__(self, cfg, classes, **kwargs: Any) -> None:
        super().__init__(cfg, classes, **kwargs)
        thresh = cfg.demo.get("score_thresh")
        self.score_thresh = DEMO_SCORE_THRESH if thresh is None else float(thresh)

    def val_transform(self):
        """data.val.transforms with boxes following every geometric step; None when there
        are none (letterboxing is a step of its own)."""
        import albumentations as A

        from aicore.data.transforms import build_pipeline
        from aicore.tasks.detection.datasets import BBOX_PARAMS
        nodes = self._val_nodes()
        if not nodes:
            return None
        return build_pipeline(nodes, "data.val.transforms", bbox_params=A.BboxParams(**BBOX_PARAMS))

    def preprocess(self, img: np.ndarray, name: str = "image") -> tuple[torch.Tensor, Meta]:
        """One image as read -> letterboxed (aspect ratio kept, padded at the bottom/right),
        val-transformed, normalised CHW tensor; the Meta holds the letterbox scale."""
        from aicore.data.io import to_channels
        boxed, scale = letterbox(to_channels(img, self.in_channels, name), list(self.input_size))
        if self.transform is not None:
            boxed = self.transform(image=boxed, bboxes=np.zeros((0, 4), np.float32),
                                   labels=np.zeros(0, np.int64))["image"]
        return self.normalize(boxed), Meta(orig_size=(int(img.shape[0]), int(img.shape[1])),
                                           scale=float(scale), input_size=self.input_size)

    def results(self, outputs: list[dict[str, torch.Tensor]],
                metas: list[Meta]) -> list[DetectionResult]:
        preds = []
        for det, meta in zip(outputs, metas):
            keep = det["scores"].float() >= self.score_thresh
            boxes = boxes_to_original(det["boxes"][keep].float().cpu(), meta.scale,
                                      meta.orig_size)
            labels = det["labels"][keep].cpu().numpy().astype(np.int64)
            preds.append(DetectionResult(
                boxes=boxes.numpy().astype(np.float32).reshape(-1, 4),
                scores=det["scores"][keep].float().cpu().numpy().astype(np.float32),
                class_ids=labels, class_names=[self.classes[int(k)] for k in labels]))
        return preds

    def draw(self, rgb: np.ndarray, pred: DetectionResult) -> np.ndarray:
        from aicore.tasks.detection.visualize import draw_detections
        return draw_detections(rgb, pred.boxes, pred.scores, pred.class_ids.astype(int),
                               self.classes)

    def csv_row(self, pred: DetectionResult) -> dict[str, Any]:
        objects = "; ".join(f"{n} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
                            for n, s, b in zip(pred.class_names, pred.scores, pred.boxes))
        return {"detections": len(pred.class_ids), "objects (class score x1 y1 x2 y2)": objects}

    def write_report(self, results: list[dict[str, Any]], out: Path) -> None:
        """detections.json: per image (or video frame) its boxes in original pixels."""
        from aicore.tasks.detection.visualize import write_detections_json
        write_detections_json([{**r, "prediction": {
            "names": r["prediction"].class_names, "labels": r["prediction"].class_ids,
            "scores": r["prediction"].scores, "boxes": r["prediction"].boxes}}
            for r in results], self.score_thresh, out)

    # -- export --------------------------------------------------------------------------------

    def prepare_export(self, model: nn.Module) -> nn.Module:
        """export.fuse_bn: fold BatchNorm into the preceding convolutions (fold_conv_bn)."""
        return fold_conv_bn(model) if self.cfg.export.get("fuse_bn") else model

    def export(self, model: nn.Module) -> ExportSpec:
        if not hasattr(model, "export_forward"):
            raise ExportError(f"model {self.cfg.model.type} has no export_forward(); detection "
                              f"export needs a model that returns dense boxes and scores")
        from aicore.tasks.detection.export import (ExportDense, ExportWithNMS, compare_with_model,
                                                   manifest_sections, postprocess_recipe)
        recipe = postprocess_recipe(model, self.input_size)
        nms = bool(self.cfg.export.get("nms"))
        manifest = manifest_sections(recipe, nms, self.score_thresh)
        if nms:
            return ExportSpec(ExportWithNMS(model, recipe), ["detections"], manifest,
                              wrap=lambda m: ExportWithNMS(m, recipe), check=compare_with_model)
        return ExportSpec(ExportDense(model), ["boxes", "scores"], manifest, wrap=ExportDense)

    def normalization(self) -> dict[str, Any]:
        info = super().normalization()
        info["preprocess"] = ("letterbox: scale r = min(H / h, W / w) keeping the aspect ratio, "
                              "resize the image to (round(h * r), round(w * r)), paste it at the "
                              f"top-left of an H x W canvas filled with {PAD_VALUE} (8-bit), then "
                              "x = (pixel / 255 - mean) / std (pixel / 65535 for 16-bit)")
        return info

    def deploy_preprocess(self) -> dict[str, Any]:
        info = super().deploy_preprocess()
        info.update(resize="letterbox", interpolation="area_if_shrinking_else_linear",
                    pad_value=PAD_VALUE, val_transforms_after_resize=True)
        return info


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` with BatchNorm folded into the preceding convolution, module by module.

    The shared torch.fx fusion cannot trace detectors (their forward branches on train/eval
    mode and on the number of boxes), so the conv+BN pairs are folded here directly: YOLOX's
    ConvBNAct blocks and every (Conv2d, BatchNorm2d) pair inside an nn.Sequential, which
    covers torchvision's Conv2dNormActivation. The export checks the result against the
    unfused model on real images."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from aicore.tasks.detection.yolox import ConvBNAct
    model = copy.deepcopy(model).eval()
    folded = 0
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv, module.bn = fuse_conv_bn_eval(module.conv, module.bn), nn.Identity()
            folded += 1
        elif isinstance(module, nn.Sequential):
            children = list(module.children())
            for i in range(len(children) - 1):
                conv, bn = children[i], children[i + 1]
                if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                    module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                    folded += 1
    if folded:
        logger.info(f"conv-bn fusion: {folded} BatchNorm layers folded into convolutions")
    return model
