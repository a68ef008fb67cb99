# importing the modules registers their components
from aicore.tasks.detection import (datasets, evaluator, hooks, losses,  # noqa: F401
                                    spec, torchvision_models, trainer, yolox)
