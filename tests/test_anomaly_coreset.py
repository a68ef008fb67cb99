"""The coreset search's projections (aicore/tasks/anomaly/coreset.py) and PatchCore's options
for them: PCA keeps the distances of features that vary along few axes, so the greedy picks are
those of the exact search; the random projections keep lengths on average."""
from __future__ import annotations

import math

import pytest
import torch

from aicore.errors import ConfigError
from aicore.tasks.anomaly.coreset import (jl_dim, k_center_greedy, pca_projection,
                                          random_projection)
from aicore.tasks.anomaly.models import PatchCore


def _low_rank(n: int = 600, dim: int = 48, rank: int = 6, seed: int = 0) -> torch.Tensor:
    """n points that vary along `rank` random directions of a dim-dimensional space, shifted
    away from the origin (PCA must centre them)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g))[0]
    scales = torch.linspace(3, 0.5, rank)
    return (torch.randn(n, rank, generator=g) * scales) @ basis.T + 5


def _dist(a: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")  # no rounding trick


def test_pca_projection_keeps_distances_of_low_rank_features():
    x = _low_rank()
    proj = pca_projection(x, 6)
    assert proj.shape == (48, 6)
    torch.testing.assert_close(proj.T @ proj, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(_dist(x @ proj), _dist(x), atol=2e-4, rtol=0)
    # the axes come largest variance first
    var = (x @ proj).var(0)
    assert bool((var[:-1] >= var[1:]).all())
    # fewer axes than the features use: distances shrink, never grow (up to rounding)
    d3 = _dist(x @ pca_projection(x, 3))
    assert float((d3 - _dist(x)).max()) < 2e-4
    assert float((_dist(x) - d3).max()) > 0.5


def test_pca_search_picks_as_the_exact_search():
    x = _low_rank(seed=1)
    exact = k_center_greedy(x, 40, proj_dim=None, seed=2)
    pca = k_center_greedy(x, 40, proj_dim=8, seed=2, projection="pca")
    assert torch.equal(exact, pca)
    # a random projection to as many dimensions does not keep the distances, nor the picks
    gauss = k_center_greedy(x, 40, proj_dim=8, seed=2, projection="gaussian")
    assert not torch.equal(exact, gauss)


def test_random_projections_keep_lengths_on_average():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 384, generator=g)
    for kind in ("gaussian", "sparse"):
        p = random_projection(384, 200, kind, seed=1)
        assert p.shape == (384, 200)
        assert torch.equal(p, random_projection(384, 200, kind, seed=1))  # seeded
        ratio = (x @ p).pow(2).sum(1) / x.pow(2).sum(1)
        assert abs(float(ratio.mean()) - 1) < 0.03
    sparse = random_projection(384, 200, "sparse", seed=1)
    assert abs(float((sparse != 0).float().mean()) - 384 ** -0.5) < 0.005
    with pytest.raises(ValueError, match="gaussian"):
        random_projection(384, 200, "pca")
    with pytest.raises(ValueError, match="projection"):
        k_center_greedy(x, 10, proj_dim=16, projection="nope")
    # anomalib's size: eps 0.9 -> 4 ln(n) / 0.162
    assert jl_dim(3840) == 203 and jl_dim(256_000) == 307


def _fitted_bank_and_patches(**kw):
    torch.manual_seed(0)  # the same random-init backbone for every call
    model = PatchCore(backbone="resnet18", input_size=(64, 64), coreset_ratio=0.1, **kw).eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.start_fit()
    model.accumulate(x)
    model.finish_fit()
    with torch.no_grad():
        e = model.embed(x)
    return model.memory_bank, e.permute(0, 2, 3, 1).reshape(-1, e.shape[1])


def test_patchcore_projection_options():
    model = PatchCore(backbone="resnet18", input_size=(32, 32))
    # default: the paper's / anomalib's search (sparse projection to the JL size)
    assert (model.proj_dim, model.projection) == ("auto", "sparse")
    with pytest.raises(ConfigError, match="model.projection"):
        PatchCore(backbone="resnet18", input_size=(32, 32), projection="random")
    with pytest.raises(ConfigError, match="model.proj_dim"):
        PatchCore(backbone="resnet18", input_size=(32, 32), proj_dim=0)
    with pytest.raises(ConfigError, match='"auto"'):
        PatchCore(backbone="resnet18", input_size=(32, 32), proj_dim="jl")
    # the fit goes through the chosen projection, and the bank holds full-width features:
    # default = a sparse projection to jl_dim(N); "pca" + 128 = the first 128 principal axes
    bank, feats = _fitted_bank_and_patches()
    n = feats.shape[0]  # 4 images x 8 x 8 patches
    assert bank.shape == (math.ceil(0.1 * n), 384)
    want = k_center_greedy(feats, bank.shape[0], jl_dim(n), seed=0, projection="sparse")
    assert torch.equal(bank, feats[want])
    bank_pca, _ = _fitted_bank_and_patches(projection="pca", proj_dim=128)
    assert torch.equal(bank_pca, feats[k_center_greedy(feats, bank.shape[0], 128, seed=0,
                                                       projection="pca")])
    assert not torch.equal(bank_pca, bank)


def test_auto_proj_dim_is_anomalibs_jl_size():
    """proj_dim "auto" projects to jl_dim(N) dimensions: the same picks as giving that number."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 384, generator=g)
    assert jl_dim(400) == 147
    auto = k_center_greedy(x, 40, proj_dim="auto", seed=5, projection="sparse")
    assert torch.equal(auto, k_center_greedy(x, 40, proj_dim=147, seed=5, projection="sparse"))
    assert not torch.equal(auto, k_center_greedy(x, 40, proj_dim=64, seed=5,
                                                 projection="sparse"))
    # the PatchCore option reaches the search
    model = PatchCore(backbone="resnet18", input_size=(32, 32), coreset_ratio=0.25,
                      projection="sparse", proj_dim="auto")
    model.start_fit()
    model.accumulate(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    model.finish_fit()
    assert model.memory_bank.shape == (16, 384)


def test_lazy_block_search_picks_the_farthest_row_each_time():
    """The CPU search (_greedy_blocks: lazily refreshed blocks of rows) makes the same picks as
    one pass over all rows per pick (_greedy_passes, the GPU form), block edges included, and
    each pick is the row farthest from the centres before it (checked in float64)."""
    from aicore.tasks.anomaly.coreset import _greedy_blocks, _greedy_passes
    g = torch.Generator().manual_seed(7)
    # clusters of very different sizes, as patch features are; N not a multiple of the block
    x = torch.cat([torch.randn(n, 12, generator=g) * s + 4 * torch.randn(12, generator=g)
                   for n, s in ((700, 1.0), (211, 0.3), (90, 2.0), (3, 0.1))])
    for block in (16, 64, 256, 5000):
        got = _greedy_blocks(x, 120, first=5, block=block)
        assert torch.equal(got, _greedy_passes(x, 120, first=5)), block
    xd = x.double()
    for k in range(1, 120):
        d = torch.cdist(xd, xd[got[:k]]).min(1).values
        assert float(d[got[k]]) >= float(d.max()) * (1 - 1e-5)
    # exact duplicates: rows already chosen are never chosen again
    dup = torch.cat([torch.zeros(300, 4), torch.ones(300, 4)])
    sel = _greedy_blocks(dup, 10, first=0, block=64)
    assert len(set(sel.tolist())) == 10
    # through the public function on the CPU: the block search, with its projection
    pub = k_center_greedy(x, 50, proj_dim=8, seed=3, projection="sparse")
    proj = x @ random_projection(12, 8, "sparse", seed=3)
    first = int(torch.randint(len(x), (1,), generator=torch.Generator().manual_seed(3)))
    assert torch.equal(pub, _greedy_passes(proj, 50, first))
