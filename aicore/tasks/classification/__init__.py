# importing the modules registers their components and the task (spec.py)
from aicore.tasks.classification import (datasets, evaluator, models, spec,  # noqa: F401
                                         trainer)
