"""The shared part of PaDiM and PatchCore: a frozen timm feature extractor (``features_only``),
the fit / score interface, the anomaly map at input resolution, and the calibration.

Models are fitted without gradients on good images only: ``start_fit()``, ``accumulate(images)``
per batch, ``finish_fit()``. What they learn lives in buffers (PaDiM: per-position mean and
inverse covariance; PatchCore: the memory bank), so it is saved in the checkpoint and loads
with ``torch.load(weights_only=True)``. ``forward(images)`` returns the anomaly map
(B, 1, H, W) at the input resolution and the image score (B,); both are raw distances (higher =
more anomalous). The decision thresholds found on the validation split are kept in buffers too
(``calibrate``), so a checkpoint is ready for deployment on its own.
"""
from __future__ import annotations

import difflib
from contextlib import nullcontext
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from aicore.backbones import create_timm
from aicore.errors import ConfigError
from aicore.tasks.anomaly.blur import GaussianBlur


def full_precision(device: torch.device):
    """Statistics and distances stay float32/64 even when the backbone runs under AMP."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


class AnomalyModel(nn.Module):
    """A frozen timm feature extractor, the fitted statistics, and the calibration.

    Subclasses implement the fit (``start_fit``, ``accumulate``, ``finish_fit``) and
    ``score_patches`` (features -> per-patch distances and image scores).
    """

    #: buffers whose size depends on the training data; a checkpoint's shape wins on load
    dynamic_buffers: tuple[str, ...] = ()

    def __init__(self, backbone: str, layers: Sequence[int], pretrained: bool | str,
                 in_chans: int, input_size: Sequence[int], blur_sigma: float,
                 backbone_kwargs: dict[str, Any] | None) -> None:
        super().__init__()
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise ConfigError(f"model.layers = {layers!r}: give timm feature indices, e.g. "
                              f"[1, 2, 3] (for ResNets 1 = layer1 at stride 4, 2 = layer2, 3 = "
                              f"layer3)")
        self.layers = [int(i) for i in layers]
        if not timm.is_model(backbone):  # create_timm's message would name model.name
            close = difflib.get_close_matches(backbone, timm.list_models(), n=3, cutoff=0.6)
            raise ConfigError(f"model.backbone = {backbone!r} is not a timm model."
                              f"{' Did you mean: ' + ', '.join(close) + '?' if close else ''} "
                              f"List them with `python main.py --list models '*{backbone[:6]}*'`")
        try:
            self.backbone = create_timm(backbone, pretrained, in_chans, features_only=True,
                                        out_indices=tuple(self.layers),
                                        **(backbone_kwargs or {}))
        except (IndexError, AssertionError) as e:
            info = create_timm(backbone, False, in_chans, features_only=True).feature_info
            choices = ", ".join(f"{i} = {n} (stride {r})" for i, (n, r) in enumerate(
                zip(info.module_name(), info.reduction())))
            raise ConfigError(f"model.layers = {list(layers)} does not fit {backbone}: {e}. "
                              f"Its feature indices are: {choices}") from None
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.in_chans = int(in_chans)
        self.input_size = tuple(int(s) for s in input_size)
        self.blur = GaussianBlur(blur_sigma)
        with torch.no_grad():  # feature shapes for the buffers, from one dry run
            feats = self.backbone(torch.zeros(1, self.in_chans, *self.input_size))
        self.feature_channels = [int(f.shape[1]) for f in feats]
        self.feature_size = tuple(int(s) for s in feats[0].shape[-2:])
        # thresholds and map range found on the validation split (NaN = not calibrated yet)
        for name in ("image_threshold", "pixel_threshold", "map_min", "map_max"):
            self.register_buffer(name, torch.tensor(float("nan")))
        self.register_buffer("n_train", torch.tensor(0, dtype=torch.long))

    def train(self, mode: bool = True) -> "AnomalyModel":
        # The backbone is a fixed feature extractor: BatchNorm must keep its statistics even
        # while the trainer puts the model in training mode for the fitting pass.
        super().train(mode)
        self.backbone.eval()
        return self

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps of the chosen layers, float32."""
        return [f.float() for f in self.backbone(x)]

    # -- fitting (no gradients) ----------------------------------------------------------------

    def start_fit(self) -> None:
        raise NotImplementedError

    def accumulate(self, images: torch.Tensor) -> None:
        raise NotImplementedError

    def finish_fit(self) -> None:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return int(self.n_train) > 0

    # -- scoring -------------------------------------------------------------------------------

    def score_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, h, w) patch distances, and image scores (B,) or None for "max of the map"."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches, scores = self.score_patches(x)
        with full_precision(x.device):
            amap = F.interpolate(patches[:, None], size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)
            amap = self.blur(amap)
            if scores is None:
                scores = amap.flatten(1).amax(1)
        return amap, scores

    # -- calibration ---------------------------------------------------------------------------

    def calibrate(self, image_threshold: float, pixel_threshold: float, map_min: float,
                  map_max: float) -> None:
        """Store the thresholds and map range found on the validation split."""
        for name, value in (("image_threshold", image_threshold),
                            ("pixel_threshold", pixel_threshold), ("map_min", map_min),
                            ("map_max", map_max)):
            getattr(self, name).fill_(float(value))

    def calibration(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("image_threshold", "pixel_threshold",
                                                     "map_min", "map_max")}
