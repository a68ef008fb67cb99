"""Gaussian smoothing of anomaly maps (the last step of PaDiM's and PatchCore's forward)."""
from __future__ import annotations

import warnings

import torch
import torch.fx
from torch import nn


class GaussianBlur(nn.Module):
    """Gaussian smoothing of (B, 1, H, W) maps with mirrored edges (reflection without repeating
    the edge pixel, as kornia and anomalib do); sigma 0 = identity.

    Applied as two matrix products, Kh @ x @ Kw^T, where each K is the banded (n, n) matrix of
    the 1-D kernel with the edge reflection folded in: the same result as padding and a
    separable convolution, but one BLAS call per side instead of a single-channel convolution
    (about 50x faster on CPU at 256 px). Exports to ONNX as two MatMuls with constant matrices.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        radius = int(4 * self.sigma + 0.5) if self.sigma > 0 else 0
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-t ** 2 / (2 * max(self.sigma, 1e-6) ** 2))
        self.radius = radius
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 1, -1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.radius == 0:
            return x
        mh, mw = blur_operators(x, self.kernel, self.radius)
        return torch.matmul(torch.matmul(mh, x), mw)


_OPERATORS: dict[tuple, torch.Tensor] = {}


def blur_operators(x: torch.Tensor, kernel: torch.Tensor,
                   radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, H) and (W, W)^T operators of the 1-D blur along each axis of x, edges mirrored;
    cached per size. A leaf for torch.fx (sizes are known only at run time); constants in
    traced and exported graphs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        k = kernel.reshape(-1).detach().to("cpu", torch.float64)
        out = []
        for n in (h, w):
            key = (n, radius, tuple(k.tolist()), str(x.device), x.dtype)
            if key not in _OPERATORS:
                cols = (torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None])
                if n > 1:  # mirror at both ends, repeatedly when the kernel exceeds the axis
                    period = 2 * (n - 1)
                    cols = cols.remainder(period)
                    cols = torch.where(cols > n - 1, period - cols, cols)
                else:
                    cols = cols.clamp(0, 0)
                m = torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, cols, k.expand(n, -1))
                _OPERATORS[key] = m.to(device=x.device, dtype=x.dtype)
            out.append(_OPERATORS[key])
    return out[0], out[1].T


torch.fx.wrap("blur_operators")
