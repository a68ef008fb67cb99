"""The deploy runtime: run an exported AICore model with numpy, OpenCV and onnxruntime only.

``from aicore.deploy import Predictor`` needs no torch, timm or albumentations; see
notes/deploy.md. Names are imported lazily so the training side can use the torch-free
helpers here (letterbox, the anomaly rule) without loading onnxruntime.
"""
from __future__ import annotations

__all__ = ["Predictor", "DeployError", "ClassificationResult", "SegmentationResult",
           "DetectionResult", "AnomalyResult"]


def __getattr__(name: str):
    if name == "Predictor":
        from aicore.deploy.predictor import Predictor
        return Predictor
    if name == "DeployError":
        from aicore.deploy.manifest import DeployError
        return DeployError
    if name in __all__:
        from aicore.deploy import results
        return getattr(results, name)
    raise AttributeError(f"module 'aicore.deploy' has no attribute {name!r}")
