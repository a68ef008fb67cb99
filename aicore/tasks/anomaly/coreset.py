"""Greedy coreset subsampling (k-center greedy), as PatchCore uses to shrink its memory bank.

The coreset is a subset whose points cover the whole feature set: every feature lies close to
some chosen one, so nearest-neighbour distances to the coreset are close to those to the full
bank. Greedy k-center picks, each round, the point farthest from everything chosen so far
(a 2-approximation of the optimal covering radius). Distances are measured after a random
Gaussian projection to a few dimensions (Johnson-Lindenstrauss: pairwise distances survive),
which makes each round a cheap matrix-vector product, as in the PatchCore paper (sec. 3.2).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def k_center_greedy(features: torch.Tensor, n_select: int, proj_dim: int | None = 128,
                    seed: int = 0) -> torch.Tensor:
    """Indices (in selection order) of `n_select` rows of `features` (N, D) chosen greedily so
    that the largest distance from any row to its nearest chosen row is small.

    proj_dim: project to this many dimensions first (None or >= D: use the features as they
    are). The first centre is a random row; everything is deterministic for a given seed.
    """
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n, device=features.device)
    if n_select <= 0:
        return torch.zeros(0, dtype=torch.long, device=features.device)
    g = torch.Generator().manual_seed(seed)
    x = features.float()
    if proj_dim is not None and proj_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], proj_dim, generator=g) / proj_dim ** 0.5
        x = x @ proj.to(x.device)
    # |a - b|^2 = |a|^2 - 2 a.b + |b|^2: one matrix-vector product per round, no (N, D) copy
    sq = (x * x).sum(1)
    min_dist = torch.full((n,), float("inf"), device=x.device)
    selected = torch.empty(n_select, dtype=torch.long, device=x.device)
    idx = int(torch.randint(n, (1,), generator=g))
    for i in range(n_select):
        selected[i] = idx
        d = (sq - 2 * (x @ x[idx]) + sq[idx]).clamp_(min=0)
        torch.minimum(min_dist, d, out=min_dist)
        min_dist[idx] = -1  # never pick a chosen row again, even among exact duplicates
        idx = int(torch.argmax(min_dist))
    return selected
