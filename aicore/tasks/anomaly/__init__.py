# importing the modules registers their components and the task (spec.py)
from aicore.tasks.anomaly import datasets, evaluator, padim, patchcore, spec, trainer  # noqa: F401
