"""The classification task: its trainer and the config keys only it has."""
from aicore.config_values import Rule
from aicore.tasks.classification.protocol import ClassificationProtocol
from aicore.tasks.classification.trainer import ClassificationTrainer
from aicore.tasks.spec import TaskSpec, register_task

CAM_METHODS = ("GradCAM", "GradCAMPlusPlus", "HiResCAM", "XGradCAM", "LayerCAM", "EigenCAM",
               "ScoreCAM", "AblationCAM", "FullGrad")  # aicore/tasks/classification/cam.py

DEFAULTS = {
    # training strategies (see notes/classification.md)
    "train": {"class_balance": None,  # None | "loss" (balanced loss weights) | "sampler"
              "mixup": None,  # None | {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, ...}
              "distill": None,  # None | {"checkpoint": teacher.pth, "temperature": 4, "alpha": 0.5}
              "rdrop": None},  # None | {"alpha": 1.0}
    "eval": {"tta": None,  # None | "hflip" | "tencrop"
             "tsne": True},  # t-SNE plot of penultimate features
    "demo": {"cam": None,  # None | "GradCAM" | "GradCAMPlusPlus" | ...
             "cam_layer": None},  # module name for the CAM; None = the last feature stage
}

RULES = {
    "train.class_balance": Rule("choice", choices=(None, "loss", "sampler")),
    "train.mixup": Rule("dict", nullable=True),
    "train.distill": Rule("dict", nullable=True),
    "train.rdrop": Rule("dict", nullable=True),
    "eval.tta": Rule("choice", choices=(None, "hflip", "tencrop")),
    "eval.tsne": Rule("bool"),
    "demo.cam": Rule("choice", choices=(None,) + CAM_METHODS),
    "demo.cam_layer": Rule("str", nullable=True),
}

SPEC = register_task(TaskSpec("classification", ClassificationTrainer,
                              protocol=ClassificationProtocol, defaults=DEFAULTS, rules=RULES))
