"""The inference protocol of a task: everything between an image as read and a typed result.

One ``TaskProtocol`` subclass per task (``aicore/tasks/<task>/protocol.py``) says how

- an image becomes the model's input, plus the ``Meta`` needed to map outputs back to it
  (``preprocess -> (tensor, meta)``),
- a batch of model outputs becomes typed predictions, the deploy runtime's result dataclasses
  (``predict``; aicore/deploy/results.py), so a checkpoint and an export answer alike,
- a prediction is drawn and written as a CSV row (``draw``, ``csv_row``), plus the extra demo
  files (``write_report``),
- a model becomes the module to export and the manifest fields that describe it (``export``,
  called once).

A protocol is built from the resolved config and the class names (``make_protocol``); it holds
no state that one call leaves for the next. The runners (eval, demo, export), ``aicore.load``
and the app use it; ``BaseTrainer`` only trains. A task names its protocol in its TaskSpec.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from dotmap import DotMap
from torch import nn

from aicore.errors import ConfigError


@dataclass(frozen=True)
class Meta:
    """What preprocess knows about one image that predict needs to map outputs back to it."""
    orig_size: tuple[int, int]  # (height, width) of the image as read
    scale: float = 1.0  # input pixels = original pixels * scale (detection's letterbox)
    pad: tuple[int, int] = (0, 0)  # (top, left) of the image on the input canvas
    input_size: tuple[int, int] | None = None  # (height, width) of the model's input


@dataclass
class ExportSpec:
    """What ``TaskProtocol.export`` returns: the module to export with its output names, and
    the task's fields of manifest.json. ``wrap`` builds the same module around another copy of
    the model (the one with BatchNorm fused), so both are checked against ``module``.
    ``check(module, images)``: an extra parity figure of the task (detection with export.nms:
    the in-graph post-processing against the model's own detections), or None."""
    module: nn.Module
    outputs: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    wrap: Callable[[nn.Module], nn.Module] | None = None
    check: Callable[[nn.Module, torch.Tensor], float | None] | None = None


def amp_context(amp: str | None, device: torch.device):
    """autocast for train.amp ("bf16" / "fp16" / null) on `device`."""
    if not amp:
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class TaskProtocol:
    """Base class; the defaults are those of a plain image model (resize to data.input_size,
    normalise, one forward pass). See the four task subclasses."""

    task = ""

    def __init__(self, cfg: DotMap, classes: list[str], *, device: torch.device | None = None,
                 model: nn.Module | None = None, checkpoint: Path | None = None,
                 postprocess: dict[str, Any] | None = None,
                 resize_in_float: bool = False, resize_antialias: bool = False) -> None:
        """`model` and `checkpoint`: the loaded model and the file it came from, for tasks
        whose predictions depend on what was calibrated for it (anomaly thresholds).
        `postprocess`: an export manifest's postprocess section, when the predictions come
        from an exported model (demo.backend = "onnx") instead. `resize_in_float`: 8-bit
        images are resized as float32, without rounding to whole levels, as the task's
        datasets do (the trainer's ``resize_in_float``). `resize_antialias`: a shrinking
        resize widens its filter by the shrink factor (the trainer's ``resize_antialias``)."""
        from aicore.data.transforms import Normalize, default_mean_std
        self.cfg = cfg
        self.classes = list(classes)
        self.device = device or torch.device("cpu")
        self.checkpoint = checkpoint
        self.resize_in_float = bool(resize_in_float)
        self.resize_antialias = bool(resize_antialias)
        data = cfg.data
        self.in_channels = int(data.in_channels)
        self.input_size = tuple(int(s) for s in data.input_size)
        self.mean, self.std = default_mean_std(self.in_channels, data.mean or None,
                                               data.std or None)
        self.normalize = Normalize(self.mean, self.std)
        self.transform = self.val_transform()

    # -- image -> input -----------------------------------------------------------------------

    def val_transform(self):
        """The val split's albumentations pipeline (data.val.transforms)."""
        from aicore.data.transforms import build_pipeline
        return build_pipeline(self._val_nodes(), "data.val.transforms")

    def _val_nodes(self) -> list[dict]:
        nodes = self.cfg.data.val.transforms or []
        return [n.toDict() if hasattr(n, "toDict") else n for n in nodes]

    def preprocess(self, img: np.ndarray, name: str = "image") -> tuple[torch.Tensor, Meta]:
        """One image as OpenCV reads it (HW or HWC BGR(A), 8/16-bit) -> (CHW input tensor, its
        Meta): the val transforms, a stretch to data.input_size when they did not reach it,
        normalisation."""
        from aicore.data.io import to_channels
        from aicore.deploy.preprocess import resize_linear
        orig = (int(img.shape[0]), int(img.shape[1]))
        x = self.transform(image=to_channels(img, self.in_channels, name))["image"]
        h, w = self.input_size
        if x.shape[:2] != (h, w):
            x = resize_linear(x, (h, w), self.resize_in_float, self.resize_antialias)
        return self.normalize(x), Meta(orig_size=orig, input_size=(h, w))

    # -- outputs -> results -------------------------------------------------------------------

    def autocast(self):
        return amp_context(self.cfg.train.amp, self.device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> Any:
        """The model's raw outputs for a batch already on the device."""
        return model(x)

    @torch.no_grad()
    def predict(self, model: nn.Module, tensors: torch.Tensor, metas: list[Meta]) -> list[Any]:
        """A batch of preprocessed images (N, C, H, W) and their metas -> one typed result
        per image, in the original image's pixels."""
        with self.autocast():
            outputs = self.forward(model, tensors.to(self.device))
        return self.results(outputs, metas)

    def results(self, outputs: Any, metas: list[Meta]) -> list[Any]:
        """task: the batch's outputs -> one result dataclass per image."""
        raise NotImplementedError

    def eval_module(self, model: nn.Module) -> nn.Module:
        """The module mode=eval scores (classification wraps it for test-time augmentation)."""
        return model

    # -- results -> files ---------------------------------------------------------------------

    def draw(self, rgb: np.ndarray, pred: Any) -> np.ndarray:
        """task: the prediction drawn on the original image (uint8 RGB)."""
        raise NotImplementedError

    def csv_row(self, pred: Any) -> dict[str, Any]:
        """task: the prediction as predictions.csv columns."""
        raise NotImplementedError

    def write_report(self, results: list[dict[str, Any]], out: Path) -> None:
        """task: demo files beyond predictions.csv and the drawings. `results` has one
        {"source", "frame", "prediction"} per image or video frame."""

    # -- model -> export ----------------------------------------------------------------------

    def prepare_export(self, model: nn.Module) -> nn.Module:
        """The model as it is exported, before export.fuse_bn's generic fusion."""
        return model

    def export(self, model: nn.Module) -> ExportSpec:
        """task: the module to export, its outputs and the manifest fields (called once)."""
        return ExportSpec(model, ["output"], {}, wrap=lambda m: m)

    def export_sample(self, dataset, i: int) -> torch.Tensor:
        """A validation image as the exported model takes it (parity check input)."""
        return dataset[i][0]

    def normalization(self) -> dict[str, Any]:
        """manifest.json input.mean/std and how pixels become the input."""
        return {"mean": self.mean, "std": self.std,
                "preprocess": "x = (pixel / 255 - mean) / std for 8-bit images "
                              "(pixel / 65535 for 16-bit), resized to the input shape"}

    def deploy_preprocess(self) -> dict[str, Any]:
        """How an image as read from disk becomes the exported model's input, as data the
        deploy runtime (aicore.deploy) follows step by step: the same steps as preprocess()."""
        color = "RGB" if self.in_channels == 3 else "GRAY"
        return {"channels": self.in_channels, "color_order": color,
                "from_bgr": "OpenCV BGR(A) is converted with cv2.cvtColor (BGR2RGB or BGR2GRAY); "
                            "alpha is dropped; a 1-channel image is repeated to 3 channels",
                "scale": {"uint8": 255.0, "uint16": 65535.0},
                "uint16": "converted to float32 / 65535 before resizing",
                "val_transforms": self._val_nodes(),
                "resize": "stretch", "interpolation": "linear",
                "size": list(self.input_size), "mean": self.mean, "std": self.std,
                **({"resize_precision": "float32"} if self.resize_in_float else {}),
                **({"resize_antialias": True} if self.resize_antialias else {})}


def protocol_class(task: str) -> type[TaskProtocol]:
    """The task's protocol class, from its TaskSpec (aicore/tasks/spec.py)."""
    from aicore.tasks.spec import find_task
    spec = find_task(task)
    if spec is None or spec.protocol is None:
        raise ConfigError(f"task {task!r} registers no inference protocol: give its TaskSpec "
                          f"protocol=<a TaskProtocol subclass> (see notes/engine.md, "
                          f"\"Inference protocol\")")
    return spec.protocol


def make_protocol(trainer, **kwargs: Any) -> TaskProtocol:
    """The protocol of the trainer's task, for its config, classes and device. kwargs:
    model and checkpoint (a loaded checkpoint), or postprocess (an export's manifest
    section, for predictions through aicore.deploy)."""
    cls = protocol_class(trainer.task)
    return cls(trainer.cfg, list(trainer.classes), device=trainer.device,
               resize_in_float=bool(getattr(trainer, "resize_in_float", False)),
               resize_antialias=bool(getattr(trainer, "resize_antialias", False)), **kwargs)
