"""Trained, exported models of every task and test images of several sizes, for the deploy
tests: tiny data, one epoch, random-init weights (nothing downloaded)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import ROOT, run_cli, write_config

BASE = ROOT / "configs" / "_base_"


def _configs(data: Path, work: Path) -> dict[str, dict]:
    common = {"seed": 0, "train": {"epochs": 1, "progress": False},
              "export": {"formats": ["onnx"], "parity_images": 2}}
    return {
        "classification": {
            **common, "_base_": str(BASE / "classification.json"),
            "work_dir": str(work / "cls"),
            "data": {"root": str(data / "cls"), "batch_size": 8, "num_workers": 0},
            "model": {"type": "TimmClassifier", "name": "resnet10t"}},
        "segmentation": {
            **common, "_base_": str(BASE / "segmentation.json"),
            "work_dir": str(work / "seg"),
            "data": {"root": str(data / "seg"), "input_size": [32, 32], "batch_size": 4,
                     "num_workers": 0},
            "model": {"type": "SMPModel", "arch": "Unet", "encoder_name": "tu-resnet10t",
                      "encoder_weights": None, "encoder_depth": 3,
                      "decoder_channels": [16, 16, 8]}},
        "detection": {
            **common, "_base_": str(BASE / "detection.json"),
            "work_dir": str(work / "det"),
            "data": {"root": str(data / "det"), "input_size": [64, 64], "batch_size": 4,
                     "num_workers": 0},
            # one epoch leaves scores near YOLOX's prior (~1e-4, nearly tied): thresholds low
            # enough to see boxes, and NMS loose enough that float noise between PyTorch and
            # onnxruntime cannot flip which of two tied boxes survives (test_nms checks NMS)
            "model": {"type": "YOLOX", "size": "nano", "score_thresh": 1e-6, "nms_iou": 0.95},
            "train": {"epochs": 1, "progress": False, "hooks": []},
            "demo": {"score_thresh": 2e-5},
            "export": {"formats": ["onnx"], "parity_images": 2, "tolerance": 0.01}},
        "anomaly": {
            **common, "_base_": str(BASE / "anomaly.json"),
            "work_dir": str(work / "ano"),
            "data": {"root": str(data / "ano"), "input_size": [48, 48], "batch_size": 8,
                     "num_workers": 0,
                     "dataset": {"type": "MVTecDataset", "cache": True, "category": "weave"}},
            "model": {"type": "PaDiM", "backbone": "resnet18", "n_features": 32}},
    }


def make_data(data: Path) -> None:
    from aicore.tasks.anomaly.synthetic import make as make_ano
    from aicore.tasks.classification.synthetic import make as make_cls
    from aicore.tasks.detection.synthetic import make as make_det
    from aicore.tasks.segmentation.synthetic import make as make_seg
    make_cls(data / "cls", n_train=6, n_val=3, n_test=1)
    make_seg(data / "seg", size=32, n_train=6, n_val=3, n_test=1)
    make_det(data / "det", size=64, n_train=8, n_val=4, n_test=1, seed=1)
    make_ano(data / "ano", size=48, n_train=8, n_test_good=3, n_test_defect=1,
             categories=("weave",))


def build(base: Path, tasks: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Train and export every task (or those of `tasks`) under base; returns per task
    {config, export, overrides}. Segmentation has a second export with sliding-window
    inference ("segmentation_sw")."""
    data, work = base / "data", base / "runs"
    make_data(data)
    out = {}
    for task, cfg in _configs(data, work).items():
        if tasks is not None and task not in tasks:
            continue
        path = write_config(base / f"{task}.json", cfg)
        assert run_cli("-c", str(path)) == 0, task
        assert run_cli("-c", str(path), "-o", "mode=export") == 0, task
        out[task] = {"config": path, "export": Path(cfg["work_dir"]) / "export", "overrides": []}
    if "classification" in out:  # export.simplify (onnxslim), checked like the plain export
        cls = out["classification"]
        slim = Path(_configs(data, work)["classification"]["work_dir"]) / "export_slim"
        assert run_cli("-c", str(cls["config"]), "-o", "mode=export", "-o", "export.simplify=true",
                       "-o", f"export.out={slim}") == 0
        out["classification_slim"] = {"config": cls["config"], "export": slim, "overrides": []}
    if "segmentation" not in out:
        return out
    seg = out["segmentation"]
    sw_export = Path(_configs(data, work)["segmentation"]["work_dir"]) / "export_sw"
    overrides = ["eval.sliding_window=true", f"export.out={sw_export}"]
    assert run_cli("-c", str(seg["config"]), "-o", "mode=export",
                   *[a for o in overrides for a in ("-o", o)]) == 0
    out["segmentation_sw"] = {"config": seg["config"], "export": sw_export,
                              "overrides": overrides[:1]}
    return out


def test_images(base: Path, data_root: Path, pattern: str) -> list[Path]:
    """A real demo image as it is and as variants: non-square, larger and smaller than the
    input size, grayscale, 16-bit colour, 16-bit grayscale."""
    src = sorted(data_root.rglob(pattern))[0]
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    base.mkdir(parents=True, exist_ok=True)
    variants = {
        "orig": img,
        "wide": cv2.resize(img, (int(w * 1.7), int(h * 0.8))),
        "large": cv2.resize(img, (w * 3 + 5, h * 2 + 3)),
        "small": cv2.resize(img, (max(8, w // 2), max(8, h // 3))),
        "gray": cv2.cvtColor(cv2.resize(img, (w + 7, h)), cv2.COLOR_BGR2GRAY),
        "rgb16": (cv2.resize(img, (w, h + 9)).astype(np.uint16) * 257 + 3).astype(np.uint16),
        "gray16": cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 250,
    }
    paths = []
    for name, im in variants.items():
        p = base / f"{name}.png"
        cv2.imwrite(str(p), im)
        paths.append(p)
    return paths


IMAGE_PATTERNS = {"classification": "val/*/*.png", "classification_slim": "val/*/*.png",
                  "segmentation": "images/val_*.png", "segmentation_sw": "images/val_*.png",
                  "detection": "images/val_*.png", "anomaly": "test/*/*.png"}


def torch_demo(config: Path, overrides: list[str]):
    """mode=demo's own predictor (the PyTorch checkpoint) for a config."""
    from aicore import config as C
    from aicore.engine.runners import demo_predictor
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import trainer_class
    import_tasks()
    cfg = C.load_config(str(config), ["mode=demo", "demo.source=unused", *overrides])
    C.validate(cfg)
    trainer = trainer_class(cfg)(cfg)
    return trainer, demo_predictor(trainer)


def keep_dir() -> Path | None:
    """AICORE_DEPLOY_KEEP=DIR keeps the exports and images there (for the torch-free check in
    another virtual environment)."""
    value = os.environ.get("AICORE_DEPLOY_KEEP")
    return Path(value) if value else None


def write_index(base: Path, models: dict[str, dict], images: dict[str, list[Path]]) -> Path:
    index = {t: {"export": str(m["export"]), "images": [str(p) for p in images[t]]}
             for t, m in models.items()}
    path = base / "index.json"
    path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return path
