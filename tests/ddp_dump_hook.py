"""Test helper, loaded through a config's custom_imports: every rank saves its final weights,
so a test can check that all DDP ranks end identical."""
import torch

from aicore.engine import dist
from aicore.engine.hooks import Hook
from aicore.registry import HOOKS


@HOOKS.register("DumpRankWeights")
class DumpRankWeights(Hook):
    priority = 99

    def after_train(self, trainer) -> None:
        state = {k: v.detach().cpu() for k, v in trainer.bare_model.state_dict().items()}
        torch.save({"state": state, "world": dist.world_size(), "rank": dist.rank()},
                   trainer.work_dir / f"rank{dist.rank()}.pth")
