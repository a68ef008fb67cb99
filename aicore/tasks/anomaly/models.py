"""PaDiM and PatchCore on any timm backbone (``features_only=True``).

Both are fitted without gradients on good images only: ``start_fit()``, ``accumulate(images)``
per batch, ``finish_fit()``. What they learn lives in buffers (PaDiM: per-position mean and
inverse covariance; PatchCore: the memory bank), so it is saved in the checkpoint and loads
with ``torch.load(weights_only=True)``. ``forward(images)`` returns the anomaly map
(B, 1, H, W) at the input resolution and the image score (B,); both are raw distances (higher =
more anomalous). The decision thresholds found on the validation split are kept in buffers too
(``calibrate``), so a checkpoint is ready for deployment on its own.
"""
from __future__ import annotations

import difflib
import math
import warnings
from contextlib import nullcontext
from typing import Any, Sequence

import timm
import torch
import torch.fx
import torch.nn.functional as F
from loguru import logger
from torch import nn

from aicore.engine import dist
from aicore.errors import ConfigError
from aicore.registry import MODELS
from aicore.tasks.anomaly.coreset import PROJECTIONS, k_center_greedy
from aicore.backbones import create_timm


def full_precision(device: torch.device):
    """Statistics and distances stay float32/64 even when the backbone runs under AMP."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


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


class AnomalyModel(nn.Module):
    """A frozen timm feature extractor, the fitted statistics, and the calibration.

    Subclasses implement the fit (``start_fit``, ``accumulate``, ``finish_fit``) and
    ``score_patches`` (features -> per-patch distances and image scores).
    """

    #: buffers whose size depends on the training data; a checkpoint's shape wins on load
    dynamic_buffers: tuple[str, ...] = ()

    def __init__(self, backbone: str, layers: Sequence[int], pretrained: bool | str,
                 in_chans: int, input_size: Sequence[int], blur_sigma: float,
                 backbone_kwargs: dict[str, Any] | None) -> None:
        super().__init__()
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise ConfigError(f"model.layers = {layers!r}: give timm feature indices, e.g. "
                              f"[1, 2, 3] (for ResNets 1 = layer1 at stride 4, 2 = layer2, 3 = "
                              f"layer3)")
        self.layers = [int(i) for i in layers]
        if not timm.is_model(backbone):  # create_timm's message would name model.name
            close = difflib.get_close_matches(backbone, timm.list_models(), n=3, cutoff=0.6)
            raise ConfigError(f"model.backbone = {backbone!r} is not a timm model."
                              f"{' Did you mean: ' + ', '.join(close) + '?' if close else ''} "
                              f"List them with `python main.py --list models '*{backbone[:6]}*'`")
        try:
            self.backbone = create_timm(backbone, pretrained, in_chans, features_only=True,
                                        out_indices=tuple(self.layers),
                                        **(backbone_kwargs or {}))
        except (IndexError, AssertionError) as e:
            info = create_timm(backbone, False, in_chans, features_only=True).feature_info
            choices = ", ".join(f"{i} = {n} (stride {r})" for i, (n, r) in enumerate(
                zip(info.module_name(), info.reduction())))
            raise ConfigError(f"model.layers = {list(layers)} does not fit {backbone}: {e}. "
                              f"Its feature indices are: {choices}") from None
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.in_chans = int(in_chans)
        self.input_size = tuple(int(s) for s in input_size)
        self.blur = GaussianBlur(blur_sigma)
        with torch.no_grad():  # feature shapes for the buffers, from one dry run
            feats = self.backbone(torch.zeros(1, self.in_chans, *self.input_size))
        self.feature_channels = [int(f.shape[1]) for f in feats]
        self.feature_size = tuple(int(s) for s in feats[0].shape[-2:])
        # thresholds and map range found on the validation split (NaN = not calibrated yet)
        for name in ("image_threshold", "pixel_threshold", "map_min", "map_max"):
            self.register_buffer(name, torch.tensor(float("nan")))
        self.register_buffer("n_train", torch.tensor(0, dtype=torch.long))

    def train(self, mode: bool = True) -> "AnomalyModel":
        # The backbone is a fixed feature extractor: BatchNorm must keep its statistics even
        # while the trainer puts the model in training mode for the fitting pass.
        super().train(mode)
        self.backbone.eval()
        return self

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps of the chosen layers, float32."""
        return [f.float() for f in self.backbone(x)]

    # -- fitting (no gradients) ----------------------------------------------------------------

    def start_fit(self) -> None:
        raise NotImplementedError

    def accumulate(self, images: torch.Tensor) -> None:
        raise NotImplementedError

    def finish_fit(self) -> None:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return int(self.n_train) > 0

    # -- scoring -------------------------------------------------------------------------------

    def score_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, h, w) patch distances, and image scores (B,) or None for "max of the map"."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches, scores = self.score_patches(x)
        with full_precision(x.device):
            amap = F.interpolate(patches[:, None], size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)
            amap = self.blur(amap)
            if scores is None:
                scores = amap.flatten(1).amax(1)
        return amap, scores

    # -- calibration ---------------------------------------------------------------------------

    def calibrate(self, image_threshold: float, pixel_threshold: float, map_min: float,
                  map_max: float) -> None:
        """Store the thresholds and map range found on the validation split."""
        for name, value in (("image_threshold", image_threshold),
                            ("pixel_threshold", pixel_threshold), ("map_min", map_min),
                            ("map_max", map_max)):
            getattr(self, name).fill_(float(value))

    def calibration(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("image_threshold", "pixel_threshold",
                                                     "map_min", "map_max")}


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


@MODELS.register("PatchCore")
class PatchCore(AnomalyModel):
    """PatchCore (Roth et al., 2022): nearest-neighbour distance to a memory bank of patches.

    Locally aware patch features: each layer's map is averaged over 3x3 neighbourhoods, upsampled
    (bilinear) to the first layer's grid and concatenated. Every training patch is collected
    (a uniform random subset of at most `max_patches` when there are more), then a greedy
    coreset of `coreset_ratio` of them becomes the memory bank. A patch's score is the distance
    to its nearest bank entry; the image score is the largest patch score, reweighted by how
    isolated that entry is among its `num_neighbors` nearest bank neighbours (paper eq. 7).
    `proj_dim` (128) and `projection` ("pca"): the coreset search measures distances in the
    first 128 principal axes of the training patches (None: in all channels, the exact search;
    "gaussian" / "sparse": a random projection instead, anomalib's is "sparse"). On the real
    textures of benchmarks/peers (resnet18, 45 fits) the PCA bank scored as the exact one and
    as anomalib's own sampler (image / pixel AUROC and PRO within 0.003) at half the exact cost
    (39 s against 82 s of CPU for 64,000 patches); see notes/anomaly.md.
    """

    dynamic_buffers = ("memory_bank",)

    def __init__(self, backbone: str = "wide_resnet50_2", layers: Sequence[int] = (2, 3),
                 coreset_ratio: float = 0.1, num_neighbors: int = 9,
                 pretrained: bool | str = False, in_chans: int = 3,
                 input_size: Sequence[int] = (224, 224), blur_sigma: float = 4.0,
                 proj_dim: int | None = 128, projection: str = "pca",
                 max_patches: int | None = 500_000, seed: int = 0,
                 backbone_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(backbone, layers, pretrained, in_chans, input_size, blur_sigma,
                         backbone_kwargs)
        if not 0 < coreset_ratio <= 1:
            raise ConfigError(f"model.coreset_ratio = {coreset_ratio}: use a fraction in (0, 1], "
                              f"e.g. 0.1 (the paper uses 0.01 to 0.25)")
        if int(num_neighbors) < 1:
            raise ConfigError(f"model.num_neighbors = {num_neighbors}: use 1 (no reweighting) "
                              f"or more (the paper uses 9)")
        if projection not in PROJECTIONS:
            raise ConfigError(f"model.projection = {projection!r}: use one of "
                              f"{', '.join(map(repr, PROJECTIONS))} (how the coreset search "
                              f"reduces the features to model.proj_dim dimensions)")
        if proj_dim is not None and (isinstance(proj_dim, bool) or not isinstance(proj_dim, int)
                                     or proj_dim < 1):
            raise ConfigError(f"model.proj_dim = {proj_dim!r}: use a number of dimensions "
                              f"(e.g. 128) or null for the exact search in all channels")
        self.coreset_ratio = float(coreset_ratio)
        self.num_neighbors = int(num_neighbors)
        self.proj_dim = proj_dim
        self.projection = projection
        self.max_patches = max_patches
        self.seed = int(seed)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.register_buffer("memory_bank", torch.zeros(0, sum(self.feature_channels)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) locally aware patch features."""
        feats = [self.pool(f) for f in self.extract(x)]
        size = feats[0].shape[-2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                     align_corners=False) for f in feats[1:]], 1)

    def start_fit(self) -> None:
        self._feats: list[torch.Tensor] = []
        self._keys: list[torch.Tensor] = []
        self._seen = 0
        self._images = 0
        self._gen = torch.Generator().manual_seed(self.seed + dist.rank())

    @torch.no_grad()
    def accumulate(self, images: torch.Tensor) -> None:
        e = self.embed(images)
        feats = e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]).contiguous()
        self._seen += feats.shape[0]
        self._images += images.shape[0]
        self._feats.append(feats)
        if self.max_patches:
            # bottom-k of uniform random keys = a uniform random subset of everything seen; the
            # pool is cut back to max_patches whenever it grows 25 % past it (amortised copies)
            self._keys.append(torch.rand(feats.shape[0], generator=self._gen).to(feats.device))
            if sum(f.shape[0] for f in self._feats) > self.max_patches * 5 // 4:
                feats, keys = torch.cat(self._feats), torch.cat(self._keys)
                keep = keys.topk(self.max_patches, largest=False).indices
                self._feats, self._keys = [feats[keep]], [keys[keep]]

    @torch.no_grad()
    def finish_fit(self) -> None:
        if not self._feats:
            raise RuntimeError("PatchCore.finish_fit: no images were accumulated")
        feats = torch.cat(self._feats)
        if self.max_patches and feats.shape[0] > self.max_patches:
            feats = feats[torch.cat(self._keys).topk(self.max_patches, largest=False).indices]
        self._feats = self._keys = []  # free the pieces before the coreset search
        if feats.shape[0] < self._seen:
            logger.info(f"PatchCore: {self._seen} training patches, a random {feats.shape[0]} "
                        f"of them (model.max_patches) go into the coreset search")
        n_select = max(1, math.ceil(self.coreset_ratio * feats.shape[0]))
        idx = k_center_greedy(feats, n_select, self.proj_dim, seed=self.seed + dist.rank(),
                              projection=self.projection)
        bank = feats[idx]
        images = self._images
        if dist.is_dist():  # each process covered its own images; the bank is the union
            parts = dist.all_gather_object(bank.cpu())
            bank = torch.cat(parts).to(feats.device)
            images = sum(dist.all_gather_object(images))
        self.memory_bank = bank.contiguous()
        self.n_train.fill_(images)
        logger.info(f"PatchCore: memory bank of {bank.shape[0]} patches x {bank.shape[1]} "
                    f"features ({self.coreset_ratio:g} of {feats.shape[0]})")

    @property
    def bank_size(self) -> int:
        """Entries in the memory bank: fixed once fitted, so a constant in exported graphs."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(self.memory_bank.shape[0])

    def _nearest(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances and indices of the k nearest bank entries for each row of q.
        Row blocks keep the (rows, bank) distance matrix near 256 MB in eager mode."""
        bank = self.memory_bank
        bank_sq = (bank * bank).sum(1)

        def knn(qs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d2 = (qs * qs).sum(1, keepdim=True) - 2 * qs @ bank.T + bank_sq[None]
            d, i = d2.topk(k, dim=1, largest=False)
            return d.clamp(min=0), i

        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return knn(q)  # exported graphs take any batch: no blocks traced at a fixed size
        step = max(1, (1 << 26) // max(1, self.bank_size))
        if q.shape[0] <= step:
            return knn(q)
        parts = [knn(q[s:s + step]) for s in range(0, q.shape[0], step)]
        return torch.cat([d for d, _ in parts]), torch.cat([i for _, i in parts])

    def score_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(x)
        with full_precision(emb.device):
            return self._score(emb)

    def _score(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, dim, h, w = emb.shape
        q = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        d2, nn_idx = self._nearest(q, 1)
        patch = d2[:, 0].sqrt().reshape(b, h * w)
        nn_idx = nn_idx[:, 0].reshape(b, h * w)
        top = patch.argmax(1)  # the most anomalous patch of each image: m_test,* in the paper
        score = patch.gather(1, top[:, None])[:, 0]  # s* = its distance to the bank
        if self.num_neighbors > 1:
            k = min(self.num_neighbors, self.bank_size)
            feat = q.reshape(b, h * w, dim).gather(1, top[:, None, None].expand(b, 1, dim))[:, 0]
            m_star = self.memory_bank[nn_idx.gather(1, top[:, None])[:, 0]]  # its neighbour m*
            _, support = self._nearest(m_star, k)  # N_b(m*), m* itself first
            neigh = self.memory_bank[support]  # (B, k, D)
            dists = (feat[:, None] - neigh).pow(2).sum(-1).clamp(min=0).sqrt()
            score = (1 - torch.softmax(dists, dim=1)[:, 0]) * score
        return patch.reshape(b, h, w), score
