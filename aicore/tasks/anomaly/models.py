"""PaDiM and PatchCore on any timm backbone; the code lives in one file per part:
``base.py`` (AnomalyModel: the frozen feature extractor, fit / score interface, calibration),
``blur.py`` (GaussianBlur of the maps), ``padim.py``, ``patchcore.py``. This module re-exports
them under the path that scripts and tests import (``aicore.tasks.anomaly.models``); the models
are registered once, where they are defined.
"""
from aicore.tasks.anomaly.base import AnomalyModel, full_precision
from aicore.tasks.anomaly.blur import GaussianBlur, blur_operators
from aicore.tasks.anomaly.padim import PaDiM
from aicore.tasks.anomaly.patchcore import PatchCore

__all__ = ["AnomalyModel", "GaussianBlur", "PaDiM", "PatchCore", "blur_operators",
           "full_precision"]
