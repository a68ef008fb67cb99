"""Example custom loss: symmetric cross-entropy (Wang et al., ICCV 2019), which tolerates some
wrong labels better than plain cross-entropy, a common situation with hand-sorted factory data.

Registered in LOSSES, so a config uses {"type": "SymmetricCrossEntropy", "alpha": 0.1}.
"""
import torch
import torch.nn.functional as F
from torch import nn

from aicore.registry import LOSSES


@LOSSES.register("SymmetricCrossEntropy")
class SymmetricCrossEntropy(nn.Module):
    def __init__(self, alpha: float = 0.1, beta: float = 1.0, num_classes: int = 2,
                 clamp: float = 1e-4) -> None:
        super().__init__()
        self.alpha, self.beta, self.num_classes, self.clamp = alpha, beta, num_classes, clamp

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target)
        prob = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
        onehot = F.one_hot(target, self.num_classes).float().clamp(min=self.clamp, max=1.0)
        rce = -(prob * torch.log(onehot)).sum(dim=1).mean()
        return self.alpha * ce + self.beta * rce
