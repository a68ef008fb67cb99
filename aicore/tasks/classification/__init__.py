from aicore.tasks.classification import datasets, evaluator, models, spec, trainer  # noqa: F401  (register)
