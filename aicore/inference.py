"""``aicore.load(run)`` returns a ``Model``: the checkpoint loaded once, ``predict`` per call.

Predictions come back as the deploy runtime's result dataclasses (aicore/deploy/results.py),
so code written against an exported model works unchanged against a PyTorch checkpoint. The
task's inference protocol (aicore/engine/protocol.py) does the work, as in mode=demo.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np

from aicore.errors import DataError

Image = Union[str, os.PathLike, np.ndarray]


class Model:
    def __init__(self, trainer, cfg, checkpoint: dict[str, Any]):
        from aicore.engine.protocol import make_protocol
        from aicore.engine.runners import checkpoint_path, load_model
        self.trainer = trainer
        self.cfg = cfg
        trainer.setup_device()
        self.module, _ = load_model(trainer, cfg, "demo")
        self.protocol = make_protocol(trainer, model=self.module,
                                      checkpoint=checkpoint_path(cfg, "demo"))
        self.task: str = trainer.task
        self.classes: list[str] = list(trainer.classes)
        self.checkpoint_path = Path(str(cfg.demo.checkpoint))
        self.epoch = checkpoint.get("epoch")

    def __repr__(self) -> str:
        return (f"Model(task={self.task!r}, classes={len(self.classes)}, "
                f"checkpoint={str(self.checkpoint_path)!r})")

    def predict(self, images: Image | Sequence[Image], color_order: str = "BGR"):
        """One image (a path, or an HWC / HW numpy array) -> one result; a list -> a list.
        Arrays are taken as OpenCV reads them (BGR); pass ``color_order="RGB"`` otherwise."""
        if color_order not in ("BGR", "RGB"):
            raise DataError(f"color_order = {color_order!r}: use \"BGR\" or \"RGB\"")
        if isinstance(images, (list, tuple)):
            return [self._one(x, color_order, f"images[{i}]") for i, x in enumerate(images)]
        return self._one(images, color_order, "image")

    def _read(self, x: Image, color_order: str, name: str) -> tuple[np.ndarray, str]:
        if isinstance(x, (str, os.PathLike)):
            path = Path(x)
            if not path.is_file():
                raise DataError(f"{path}: no such image file")
            buf = np.fromfile(str(path), dtype=np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
            if img is None:
                raise DataError(f"cannot decode image {path}: the file is empty or corrupt")
            return img, str(path)
        if not isinstance(x, np.ndarray) or x.ndim not in (2, 3):
            raise DataError(f"{name}: expected an image path or an HxW / HxWxC numpy array, got "
                            f"{type(x).__name__}{getattr(x, 'shape', '')}")
        if x.ndim == 3 and x.shape[2] == 3 and color_order == "RGB":
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x), name

    def _one(self, x: Image, color_order: str, name: str):
        raw, name = self._read(x, color_order, name)
        tensor, meta = self.protocol.preprocess(raw, name)
        return self.protocol.predict(self.module, tensor[None], [meta])[0]
