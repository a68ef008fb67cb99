"""Conv-BN fusion for inference and export: BatchNorm folded into the preceding convolution's
weights and bias, removing one memory pass per layer with identical results (up to float
rounding, which the export parity check measures against the unfused model)."""
from __future__ import annotations

from torch import nn
from loguru import logger


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A fused copy of an eval-mode model (torch.fx); the model itself if it cannot be traced
    symbolically (data-dependent control flow), with a warning saying so."""
    from torch.fx.experimental.optimization import fuse
    before = count_batchnorm(model)
    if before == 0:
        return model
    try:
        fused = fuse(model.eval(), inplace=False)
    except Exception as e:  # fx cannot trace every model; fusion is an optimisation only
        logger.warning(f"conv-bn fusion skipped: the model cannot be traced by torch.fx "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return model
    after = count_batchnorm(fused)
    logger.info(f"conv-bn fusion: {before - after} of {before} BatchNorm layers folded into "
                f"convolutions")
    return fused
