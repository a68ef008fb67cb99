"""Anomaly's inference protocol: maps and scores -> OK/NG verdicts at the decision threshold,
heat-map overlays, and the export manifest with the thresholds.

The thresholds come from eval/threshold.json when it belongs to the loaded checkpoint (eval
recomputed them, or a user edited them), else from the checkpoint; for an exported model
(demo.backend = "onnx") from its manifest. They are fixed when the protocol is built.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from loguru import logger
from torch import nn

from aicore.deploy.postprocess import is_defect
from aicore.deploy.results import AnomalyResult
from aicore.engine.protocol import ExportSpec, Meta, TaskProtocol
from aicore.errors import CheckpointError, DataError


def fingerprint(path: Path) -> str:
    """Identifies one checkpoint file (size and modification time), so a threshold.json
    computed for an earlier training run in the same folder is not used for a new one."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def deploy_calibration(cfg, model, checkpoint: Path) -> tuple[dict[str, float], str]:
    """(thresholds and map range, where they came from) for a model loaded from `checkpoint`:
    eval/threshold.json while its fingerprint matches the checkpoint, else the checkpoint's."""
    from aicore.engine.runners import out_dir
    cal, source = model.calibration(), f"{checkpoint} (found when it was trained)"
    path = out_dir(cfg, "eval") / "threshold.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("checkpoint_fingerprint") == fingerprint(checkpoint):
                cal = {k: float(saved[k]) for k in cal}
                source = str(path)
            else:
                logger.warning(f"{path} was computed for another checkpoint than {checkpoint}; "
                               f"using the thresholds stored in the checkpoint")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: cannot read the thresholds ({type(e).__name__}: {e}); "
                            f"fix the JSON or delete the file and run -o mode=eval") from None
    if not math.isfinite(cal["image_threshold"]):
        raise CheckpointError(f"{checkpoint} has no decision threshold; run -o mode=eval to "
                              f"compute one (eval/threshold.json)")
    logger.info(f"decision threshold {cal['image_threshold']:.5g} (pixel "
                f"{cal['pixel_threshold']:.5g}) from {source}")
    return cal, source


class AnomalyProtocol(TaskProtocol):
    task = "anomaly"

    def __init__(self, cfg, classes, *, model: nn.Module | None = None,
                 checkpoint: Path | None = None, postprocess: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(cfg, classes, model=model, checkpoint=checkpoint, **kwargs)
        self.calibration: dict[str, float] | None = None
        self.calibration_source = ""
        if postprocess is not None:
            self.calibration = {k: float(postprocess.get(k, np.nan)) for k in
                                ("image_threshold", "pixel_threshold", "map_min", "map_max")}
            self.calibration_source = "the export manifest"
        elif model is not None and checkpoint is not None:
            self.calibration, self.calibration_source = deploy_calibration(cfg, model,
                                                                           checkpoint)

    def _cal(self) -> dict[str, float]:
        if self.calibration is None:
            raise CheckpointError("anomaly predictions need the decision threshold: build the "
                                  "protocol with the loaded model and its checkpoint")
        return self.calibration

    def results(self, outputs, metas: list[Meta]) -> list[AnomalyResult]:
        cal = self._cal()
        maps, scores = outputs
        thr_px = cal["pixel_threshold"]
        preds = []
        for amap, score, meta in zip(maps[:, 0].float().cpu().numpy(),
                                     scores.float().cpu().tolist(), metas):
            area = float((amap >= thr_px).mean()) if math.isfinite(thr_px) else float("nan")
            h, w = meta.orig_size
            full = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            contours: list[np.ndarray] = []
            if math.isfinite(thr_px):
                found, _ = cv2.findContours((full >= thr_px).astype(np.uint8),
                                            cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                contours = [c.reshape(-1, 2) for c in found]
            preds.append(AnomalyResult(
                anomaly_map=full, score=float(score), threshold=float(cal["image_threshold"]),
                is_defect=is_defect(score, cal["image_threshold"]), defect_area=area,
                pixel_threshold=float(thr_px), contours=contours))
        return preds

    def draw(self, rgb: np.ndarray, pred: AnomalyResult) -> np.ndarray:
        from aicore.tasks.anomaly.visualize import overlay
        cal = self._cal()
        return overlay(rgb, pred.anomaly_map, pred.score, pred.threshold, pred.pixel_threshold,
                       cal["map_min"], cal["map_max"])

    def csv_row(self, pred: AnomalyResult) -> dict[str, Any]:
        return {"verdict": pred.verdict, "score": f"{pred.score:.6f}",
                "threshold": f"{pred.threshold:.6f}",
                "defect_area": f"{pred.defect_area:.6f}"}

    def export(self, model: nn.Module) -> ExportSpec:
        cal = self._cal()
        manifest = {
            "postprocess": {"image_threshold": cal["image_threshold"],
                            "pixel_threshold": cal["pixel_threshold"],
                            "map_min": cal["map_min"], "map_max": cal["map_max"],
                            "rule": "NG when float32(score) >= float32(image_threshold)",
                            "map_resize": "linear"},
            "category": self.cfg.data.dataset.toDict().get("category") or
            Path(str(self.cfg.data.root)).name,
            "outputs_meaning": {
                "anomaly_map": "(batch, 1, H, W) anomaly score per pixel at the input size",
                "score": "(batch,) image anomaly score; higher = more anomalous"},
            "thresholds": {"image": cal["image_threshold"], "pixel": cal["pixel_threshold"],
                           "rule": "NG when score >= image; defect pixels where anomaly_map >= "
                                   "pixel", "source": self.calibration_source},
            "anomaly_map_range": {"min": cal["map_min"], "max": cal["map_max"],
                                  "display": "heat = clip((anomaly_map - min) / (max - min), "
                                             "0, 1)"},
        }
        return ExportSpec(model, ["anomaly_map", "score"], manifest, wrap=lambda m: m)
