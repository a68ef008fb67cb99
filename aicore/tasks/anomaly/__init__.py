# importing the modules registers their components and the task (spec.py)
from aicore.tasks.anomaly import datasets, evaluator, models, spec, trainer  # noqa: F401
