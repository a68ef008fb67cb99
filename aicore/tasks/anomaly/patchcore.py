"""PatchCore: nearest-neighbour distance to a coreset memory bank of patch features (see
AnomalyModel for the interface, coreset.py for the bank selection)."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from loguru import logger
from torch import nn

from aicore.engine import dist
from aicore.errors import ConfigError
from aicore.registry import MODELS
from aicore.tasks.anomaly.base import AnomalyModel, full_precision
from aicore.tasks.anomaly.coreset import PROJECTIONS, k_center_greedy


@MODELS.register("PatchCore")
class PatchCore(AnomalyModel):
    """PatchCore (Roth et al., 2022): nearest-neighbour distance to a memory bank of patches.

    Locally aware patch features: each layer's map is averaged over 3x3 neighbourhoods, upsampled
    (bilinear) to the first layer's grid and concatenated. Every training patch is collected
    (a uniform random subset of at most `max_patches` when there are more), then a greedy
    coreset of `coreset_ratio` of them becomes the memory bank. A patch's score is the distance
    to its nearest bank entry; the image score is the largest patch score, reweighted by how
    isolated that entry is among its `num_neighbors` nearest bank neighbours (paper eq. 7).
    `projection` ("sparse") and `proj_dim` ("auto"): the coreset search measures distances after
    a very sparse random projection to the Johnson-Lindenstrauss size for the number of patches
    (about 200-300 dimensions), the paper's and anomalib's method. `projection` "pca" with
    `proj_dim` 128 searches the first 128 principal axes instead (0.6-1x the search time);
    None searches all channels (exact, 1.1-1.3x). On the real textures of benchmarks/peers
    (resnet18, 20 seeds x 3 categories) the default is level with anomalib on image / pixel
    AUROC and PRO, where PCA-128 was about 0.006 lower on PRO (2 standard errors); see
    notes/anomaly.md.
    """

    dynamic_buffers = ("memory_bank",)

    def __init__(self, backbone: str = "wide_resnet50_2", layers: Sequence[int] = (2, 3),
                 coreset_ratio: float = 0.1, num_neighbors: int = 9,
                 pretrained: bool | str = False, in_chans: int = 3,
                 input_size: Sequence[int] = (224, 224), blur_sigma: float = 4.0,
                 proj_dim: int | str | None = "auto", projection: str = "sparse",
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
        if proj_dim is not None and proj_dim != "auto" and (
                isinstance(proj_dim, bool) or not isinstance(proj_dim, int) or proj_dim < 1):
            raise ConfigError(f"model.proj_dim = {proj_dim!r}: use a number of dimensions "
                              f"(e.g. 128), \"auto\" (the Johnson-Lindenstrauss size for the "
                              f"number of patches, as anomalib) or null for the exact search in "
                              f"all channels")
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
