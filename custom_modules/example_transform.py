"""Example custom augmentation: line-scan camera banding.

Line-scan cameras, common on conveyors and web inspection, build an image one row at a time.
Two artefacts follow, and a model trained on clean images can mistake them for defects:
- fixed-pattern column stripes: every sensor pixel has a slightly different gain, so each
  image column is a little brighter or darker than its neighbours;
- row flicker: lamps on AC power pulse at twice the mains frequency, and as rows are taken at
  the line rate, the brightness drifts up and down along the scan direction as a sine wave.

Every .py file in custom_modules/ is imported at start-up, so this registration makes
``{"type": "LineScanBanding", "column_gain": 0.04, "row_flicker": 0.08, "p": 0.5}`` usable in
any config's ``data.<split>.transforms``. The pattern to copy for your own transform:
subclass an albumentations base (ImageOnlyTransform: pixels change, geometry does not), give
the constructor explicit keyword arguments (the config is checked against them), draw all
randomness from ``self.random_generator`` (AICore reseeds it per epoch and per worker, so runs
are reproducible), and handle uint8 and float32-in-[0, 1] (16-bit) images with 1 or 3 channels.
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from aicore.registry import TRANSFORMS


@TRANSFORMS.register("LineScanBanding")
class LineScanBanding(A.ImageOnlyTransform):
    """Multiply the image by column stripes and a sinusoidal row flicker.

    column_gain: standard deviation of the per-column relative gain (0.04 = +-4 %).
    row_flicker: largest amplitude of the row flicker (0.08 = brightness swings by up to +-8 %);
        each image draws an amplitude in [0, row_flicker].
    period_range: [min, max] flicker period in rows.
    vertical: true when rows are successive scan lines (the object moves top to bottom);
        false swaps the roles of rows and columns.
    """

    def __init__(self, column_gain: float = 0.04, row_flicker: float = 0.08,
                 period_range: tuple[float, float] | list[float] = (8.0, 64.0),
                 vertical: bool = True, p: float = 0.5) -> None:
        super().__init__(p=p)
        if not 0 <= column_gain < 1 or not 0 <= row_flicker < 1:
            raise ValueError(f"LineScanBanding: column_gain and row_flicker are relative gains in "
                             f"[0, 1), got {column_gain!r} and {row_flicker!r}")
        if len(period_range) != 2 or not 0 < period_range[0] <= period_range[1]:
            raise ValueError(f"LineScanBanding: period_range must be [min, max] rows with "
                             f"0 < min <= max, got {period_range!r}")
        self.column_gain, self.row_flicker = float(column_gain), float(row_flicker)
        self.period_range = (float(period_range[0]), float(period_range[1]))
        self.vertical = bool(vertical)

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        lines, pixels = (height, width) if self.vertical else (width, height)
        rng = self.random_generator
        columns = 1.0 + rng.normal(0.0, self.column_gain, pixels)
        period = rng.uniform(*self.period_range)
        amplitude = rng.uniform(0.0, self.row_flicker)
        phase = rng.uniform(0.0, 2 * np.pi)
        rows = 1.0 + amplitude * np.sin(2 * np.pi * np.arange(lines) / period + phase)
        gain = (rows[:, None] * columns[None, :]).astype(np.float32)  # lines x pixels
        return {"gain": gain if self.vertical else gain.T}

    def apply(self, img: np.ndarray, gain: np.ndarray | None = None,
              **params: Any) -> np.ndarray:
        if gain is None:
            return img
        g = gain[:, :, None] if img.ndim == 3 else gain
        if img.dtype == np.uint8:
            return np.clip(img.astype(np.float32) * g + 0.5, 0, 255).astype(np.uint8)
        return np.clip(img * g, 0.0, 1.0).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("column_gain", "row_flicker", "period_range", "vertical")
