"""The task inference protocols (aicore/engine/protocol.py): what mode=demo writes is
preprocess -> predict -> csv_row of the protocol, and a detection Meta maps boxes back to the
original pixels of a non-square image."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from conftest import cls_config, run_cli, write_config


def _random_init_checkpoint(config: Path, path: Path, classes: list[str]) -> None:
    """A checkpoint of the config's model as initialised (no training), in the trainer's
    format: weights, classes, task and the resolved config."""
    from aicore import config as C
    from aicore.api import _prepare
    cfg, trainer_cls = _prepare(str(config), None, "demo")
    trainer = trainer_cls(cfg)
    trainer.classes = list(classes)
    torch.manual_seed(0)
    model = trainer.build_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "classes": list(classes), "task": trainer.task,
                "epoch": 0, "best": {}, "config": C.to_dict(cfg)}, path)


def test_classification_demo_is_the_protocol_round_trip(cls_root, tmp_path):
    import aicore
    from aicore.deploy.results import ClassificationResult
    classes = sorted(p.name for p in (cls_root / "train").iterdir() if p.is_dir())
    config = write_config(tmp_path / "cls.json", cls_config(cls_root, tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "best.pth"
    _random_init_checkpoint(config, ckpt, classes)
    source = cls_root / "val"
    assert run_cli("-c", str(config), "-o", "mode=demo", "-o", f"demo.source={source}",
                   "-o", f"demo.out={tmp_path / 'demo'}") == 0
    rows = {r["source"]: r for r in csv.DictReader(open(tmp_path / "demo" / "predictions.csv",
                                                        encoding="utf-8"))}
    assert len(rows) == len(list(source.rglob("*.png")))

    model = aicore.load(ckpt, device="cpu")
    protocol = model.protocol
    for name, row in rows.items():
        raw = cv2.imread(name, cv2.IMREAD_UNCHANGED)
        x, meta = protocol.preprocess(raw, name)
        assert tuple(x.shape) == (3, 32, 32) and meta.orig_size == raw.shape[:2]
        pred = protocol.predict(model.module, x[None], [meta])[0]
        assert isinstance(pred, ClassificationResult)
        assert protocol.csv_row(pred) == {k: row[k] for k in ("predicted", "probability",
                                                              "top5")}
        # aicore.load(...).predict answers with the same protocol
        again = model.predict(name)
        assert again.class_name == pred.class_name
        np.testing.assert_allclose(again.probs, pred.probs, atol=1e-6)
        assert protocol.draw(raw[:, :, ::-1].copy(), pred).dtype == np.uint8


class _FixedDetector(nn.Module):
    """Returns the same detections in input pixels for every image (eval-mode detector
    output format), so the mapping back to the original image can be checked exactly."""

    def __init__(self, boxes: list[list[float]], scores: list[float]) -> None:
        super().__init__()
        self.register_buffer("boxes", torch.tensor(boxes, dtype=torch.float32))
        self.register_buffer("scores", torch.tensor(scores, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": self.boxes.clone(), "scores": self.scores.clone(),
                 "labels": torch.tensor([0, 1][:len(self.scores)])} for _ in images]


def _detection_cfg(tmp_path: Path):
    from aicore.api import load_cfg
    return load_cfg({"task": "detection", "work_dir": str(tmp_path / "run"),
                     "data": {"root": str(tmp_path), "in_channels": 3, "input_size": [64, 64]},
                     "model": {"type": "YOLOX"}, "demo": {"score_thresh": 0.5}})


@pytest.mark.parametrize("hw", [(100, 200), (200, 50)])
def test_detection_meta_maps_boxes_to_original_pixels(tmp_path, hw):
    from aicore.deploy.results import DetectionResult
    from aicore.tasks.detection.protocol import DetectionProtocol
    protocol = DetectionProtocol(_detection_cfg(tmp_path), ["a", "b"])
    h, w = hw
    img = np.full((h, w, 3), 90, np.uint8)
    x, meta = protocol.preprocess(img, "wide.png")
    scale = min(64 / h, 64 / w)
    assert tuple(x.shape) == (3, 64, 64)
    assert meta.orig_size == (h, w) and meta.scale == pytest.approx(scale)
    # one box inside the image, one below demo.score_thresh, in letterboxed input pixels
    model = _FixedDetector([[8.0, 4.0, 24.0, 12.0], [0.0, 0.0, 64.0, 64.0]], [0.9, 0.2])
    metas = [meta, protocol.preprocess(np.zeros((64, 64, 3), np.uint8))[1]]
    preds = protocol.predict(model, torch.stack([x, x]), metas)
    assert all(isinstance(p, DetectionResult) for p in preds)
    first, square = preds
    assert first.class_names == ["a"] and first.scores.tolist() == pytest.approx([0.9])
    expected = np.clip(np.array([8.0, 4.0, 24.0, 12.0]) / scale, 0, [w, h, w, h])
    np.testing.assert_allclose(first.boxes[0], expected, rtol=1e-5)
    # each image keeps its own meta: the 64x64 one is not rescaled
    np.testing.assert_allclose(square.boxes[0], [8.0, 4.0, 24.0, 12.0], rtol=1e-6)
    row = protocol.csv_row(first)
    assert row["detections"] == 1 and row["objects (class score x1 y1 x2 y2)"].startswith("a 0.900")
    drawn = protocol.draw(img, first)
    assert drawn.dtype == np.uint8 and drawn.ndim == 3
    protocol.write_report([{"source": "wide.png", "frame": None, "prediction": first}], tmp_path)
    saved = json.loads((tmp_path / "detections.json").read_text())
    assert saved["score_thresh"] == 0.5
    assert saved["images"][0]["detections"][0]["bbox_xyxy"] == pytest.approx(
        [round(float(v), 2) for v in expected])
