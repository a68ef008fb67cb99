"""Semantic segmentation: importing the package registers its components."""
from aicore.tasks.segmentation import (datasets, evaluator, losses, models, spec,  # noqa: F401
                                       trainer)
