"""Example custom model: every .py file in custom_modules/ is imported at start-up, so this
registration makes {"type": "TinyConvNet"} usable in any config.

The framework passes `in_chans` and `num_classes` (taken from the data) when the constructor
accepts them, exactly as for the built-in models.
"""
from torch import nn

from aicore.registry import MODELS


@MODELS.register("TinyConvNet")
class TinyConvNet(nn.Module):
    """Three conv-BN-ReLU stages and a linear head; enough for small grayscale part images."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 16,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers, c = [], in_chans
        for w in (width, width * 2, width * 4):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
