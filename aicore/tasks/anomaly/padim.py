"""PaDiM: a multivariate Gaussian per patch position (see AnomalyModel for the interface)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from aicore.engine import dist
from aicore.errors import ConfigError
from aicore.registry import MODELS
from aicore.tasks.anomaly.base import AnomalyModel, full_precision


@MODELS.register("PaDiM")
class PaDiM(AnomalyModel):
    """PaDiM (Defard et al., 2020): a multivariate Gaussian per patch position.

    Features of `layers` are upsampled (nearest) to the first layer's grid and concatenated;
    `n_features` channels chosen at random (fixed `seed`) are kept. Fitting accumulates, per
    position, the sum and the sum of outer products in float64 (memory = one (L, d, d) matrix,
    whatever the number of images), and ends with the mean and the whitening matrix
    W = L^-1 of the covariance C + `eps` * I = L L^T (Cholesky; the eps keeps it well
    conditioned). The score of a patch x is its Mahalanobis distance |W (x - mean)|.
    """

    def __init__(self, backbone: str = "resnet18", layers: Sequence[int] = (1, 2, 3),
                 n_features: int | None = 100, pretrained: bool | str = False, in_chans: int = 3,
                 input_size: Sequence[int] = (224, 224), blur_sigma: float = 4.0,
                 eps: float = 0.01, seed: int = 0,
                 backbone_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(backbone, layers, pretrained, in_chans, input_size, blur_sigma,
                         backbone_kwargs)
        total = sum(self.feature_channels)
        d = total if n_features is None else int(n_features)
        if not 0 < d <= total:
            raise ConfigError(f"model.n_features = {n_features}: the layers {self.layers} of "
                              f"{backbone} have {total} channels; choose 1..{total} (or null "
                              f"for all)")
        self.eps = float(eps)
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(total, generator=g)[:d].sort().values
        h, w = self.feature_size
        self.register_buffer("channel_idx", idx)
        self.register_buffer("mean", torch.zeros(h * w, d))
        self.register_buffer("whitening", torch.zeros(h * w, d, d))
        self._split_channels()
        self.register_load_state_dict_post_hook(self._split_channels)

    def _split_channels(self, *_: Any) -> None:
        """Per-layer copies of channel_idx (non-persistent buffers `_sel<i>`), refreshed when a
        checkpoint is loaded, so embed() picks channels before upsampling without reading
        channel_idx in Python (keeps the model traceable by torch.fx and torch.jit)."""
        chosen = self.channel_idx.tolist()
        self._presorted = chosen == sorted(chosen)
        lo = 0
        self._sel_sizes = []
        for i, c in enumerate(self.feature_channels):
            sel = [j - lo for j in chosen if lo <= j < lo + c]
            self.register_buffer(f"_sel{i}", torch.tensor(sel, dtype=torch.long,
                                                          device=self.channel_idx.device),
                                 persistent=False)
            self._sel_sizes.append(len(sel))
            lo += c

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w): chosen channels of all layers on the first layer's grid. Channels are
        picked before the (nearest) upsampling, so only d channels are ever upsampled; the order
        is that of channel_idx (sorted), as if all layers were concatenated first."""
        feats = self.extract(x)
        size = feats[0].shape[-2:]
        if not self._presorted:  # a checkpoint with an unsorted selection keeps its order
            emb = torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="nearest")
                                          for f in feats[1:]], 1)
            return emb.index_select(1, self.channel_idx)
        parts = []
        for i, f in enumerate(feats):
            if self._sel_sizes[i] == 0:
                continue
            f = f.index_select(1, getattr(self, f"_sel{i}"))
            parts.append(f if i == 0 else F.interpolate(f, size=size, mode="nearest"))
        return torch.cat(parts, 1)

    def start_fit(self) -> None:
        self._n = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    @torch.no_grad()
    def accumulate(self, images: torch.Tensor) -> None:
        e = self.embed(images).flatten(2).permute(2, 0, 1)  # (L, B, d)
        with full_precision(e.device):
            if self._shift is None:
                # Sums of values shifted by a rough mean keep E[xx^T] - mu mu^T accurate.
                self._shift = e.mean(1, keepdim=True)
                L, _, d = e.shape
                self._sum = torch.zeros(L, d, dtype=torch.float64, device=e.device)
                self._outer = torch.zeros(L, d, d, dtype=torch.float64, device=e.device)
            c = (e - self._shift).double().contiguous()  # BLAS wants contiguous batches
            self._sum += c.sum(1)
            self._outer.baddbmm_(c.transpose(1, 2), c)  # in place: no (L, d, d) temporaries
            self._n += e.shape[1]

    @torch.no_grad()
    def finish_fit(self) -> None:
        if self._sum is None:
            raise RuntimeError("PaDiM.finish_fit: no images were accumulated")
        n = torch.tensor(float(self._n), dtype=torch.float64, device=self._sum.device)
        mean = self._shift[:, 0].double() + self._sum / n  # (L, d), this process's images
        # centred second moment of this process's images, in place of the outer sums; every
        # (L, d, d) step below runs in blocks of positions so no full-size temporary is made
        m2, L = self._outer, mean.shape[0]
        step = max(1, (1 << 22) // (mean.shape[1] ** 2))  # ~32 MB of float64 per block
        blocks = [slice(s, min(s + step, L)) for s in range(0, L, step)]
        for b in blocks:
            m2[b].sub_(torch.einsum("li,lj->lij", self._sum[b], self._sum[b]), alpha=1 / float(n))
        if dist.is_dist():  # combine per-process moments exactly (Chan et al.)
            total = n.clone()
            torch.distributed.all_reduce(total)
            global_mean = mean * n
            torch.distributed.all_reduce(global_mean)
            global_mean /= total
            delta = mean - global_mean
            for b in blocks:
                m2[b].add_(torch.einsum("li,lj->lij", delta[b], delta[b]), alpha=float(n))
            torch.distributed.all_reduce(m2)
            n, mean = total, global_mean
        if n < 2:
            raise RuntimeError("PaDiM needs at least 2 training images")
        d = mean.shape[1]
        eye = torch.eye(d, dtype=torch.float64, device=m2.device)
        self.mean.copy_(mean.float())
        for b in blocks:
            cov = m2[b].div_(float(n) - 1)
            cov.diagonal(dim1=-2, dim2=-1).add_(self.eps)
            chol = torch.linalg.cholesky(cov)
            # a triangular solve per position: faster and more accurate than a general inverse
            self.whitening[b].copy_(torch.linalg.solve_triangular(
                chol, eye.expand_as(chol), upper=False))
        self.n_train.fill_(int(n))
        del self._sum, self._outer, self._shift

    def score_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        emb = self.embed(x)
        b, d, h, w = emb.shape
        with full_precision(emb.device):
            diff = (emb.flatten(2).permute(2, 0, 1) - self.mean[:, None]).contiguous()  # L,B,d
            z = torch.bmm(diff, self.whitening.transpose(1, 2))  # W (x - mean), batched over L
            return z.pow(2).sum(-1).sqrt().transpose(0, 1).reshape(b, h, w), None
