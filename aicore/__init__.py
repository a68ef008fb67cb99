"""AICore: one JSON config trains, evaluates, demos and exports vision models.

``aicore.train``, ``evaluate``, ``export`` and ``load`` (aicore/api.py) are imported on first
use, so ``import aicore`` (and ``aicore.deploy``) stays free of torch.
"""
import os as _os

__version__ = "0.1.0"

# No network at run time: albumentations would otherwise ask PyPI for a newer version on every
# import (and warn when offline). Set before any aicore module imports albumentations; a value
# the user set explicitly is kept.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["train", "evaluate", "export", "load", "TrainResult", "EvalResult", "ExportResult",
           "AICoreError", "ConfigError", "DataError", "CheckpointError", "ExportError",
           "TrainingDiverged"]

_API = {"train", "evaluate", "export", "load", "TrainResult", "EvalResult", "ExportResult"}


def __getattr__(name: str):
    if name in _API:
        from aicore import api
        return getattr(api, name)
    if name in __all__:
        from aicore import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'aicore' has no attribute {name!r}")
