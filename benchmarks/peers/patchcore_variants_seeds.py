"""AICore PatchCore coreset variants on the seeds of the anomalib comparison (issue 13).

Fits AICore's PatchCore in this process for each (seed, category, variant) on the data and
backbone weights of `anomaly.py` (same texture set, same resnet18 weights per seed) and scores it
with the same metrics, so each row pairs with anomaly.py's anomalib row of that seed and
category. Variants: "pca" (PCA to 128 dims, the default until 2026-12-07), "jl" (anomalib's
method and the default since: a sparse random projection to the Johnson-Lindenstrauss size,
proj_dim "auto"), "exact" (all channels), "gauss" (Gaussian projection to 128), "pca_nearest"
(PCA-128 with the patch scores upsampled nearest-neighbour, as anomalib does, instead of
bilinear).

    python benchmarks/peers/patchcore_variants_seeds.py --seeds 0 1 ... --image-size 64 \
        --variants pca jl exact --out rows.json

Run anomaly.py first (it writes the data and the weights under --root and --root_runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anomaly import metrics  # noqa: E402
from anomaly_aicore_run import fit_and_predict  # noqa: E402

import aicore.tasks.anomaly.base as anomaly_base  # noqa: E402
from aicore.tasks.anomaly.datasets import MVTecDataset  # noqa: E402
from aicore.tasks.anomaly.models import PatchCore  # noqa: E402

PCA128 = {"projection": "pca", "proj_dim": 128}
OPTIONS = {"pca": PCA128, "jl": {"projection": "sparse", "proj_dim": "auto"},
           "exact": {"proj_dim": None}, "gauss": {"projection": "gaussian", "proj_dim": 128},
           "pca_nearest": PCA128}


class _NearestUpsampling:
    """torch.nn.functional with interpolate forced to nearest (for "pca_nearest")."""

    def __getattr__(self, name):
        return getattr(F, name)

    @staticmethod
    def interpolate(x, size=None, mode=None, align_corners=None):
        return F.interpolate(x, size=size, mode="nearest")


def fit_and_predict_variant(train, test, weights: Path, seed: int, size: int, variant: str):
    anomaly_base.F = _NearestUpsampling() if variant == "pca_nearest" else F
    try:
        model = PatchCore("resnet18", [2, 3], 0.1, 9, pretrained=str(weights),
                          input_size=(size, size), seed=seed, **OPTIONS[variant])
        scores, maps, _ = fit_and_predict(model, train, test)
    finally:
        anomaly_base.F = F
    return scores, maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/texture_ad"))
    ap.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(20)))
    ap.add_argument("--variants", nargs="+", default=["pca", "jl", "exact"],
                    choices=list(OPTIONS))
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = a.root.parent / (a.root.name + "_runs")
    rows = json.loads(a.out.read_text()) if a.out.exists() else []
    done = {(r["variant"], r["category"], r["seed"], r["image_size"]) for r in rows}
    data = {c: tuple(MVTecDataset(str(a.root), split, category=c,
                                  input_size=[a.image_size] * 2) for split in ("train", "test"))
            for c in a.categories}
    for seed in a.seeds:
        weights = runs / f"resnet18_seed{seed}.pth"
        if not weights.exists():
            raise SystemExit(f"{weights} not found: run anomaly.py with --seeds {seed} first")
        for cat in a.categories:
            train, test = data[cat]
            for v in a.variants:
                if (v, cat, seed, a.image_size) in done:
                    continue
                scores, maps = fit_and_predict_variant(train, test, weights, seed,
                                                       a.image_size, v)
                npz = runs / f"variant_{v}_{cat}_{seed}_{a.image_size}.npz"
                np.savez(npz, paths=np.array([s[0] for s in test.samples]), scores=scores,
                         maps=maps, seconds=0.0)
                row = {"variant": v, "category": cat, "seed": seed, "image_size": a.image_size,
                       **{key: val for key, val in metrics(npz).items() if key != "seconds"}}
                rows.append(row)
                a.out.write_text(json.dumps(rows, indent=1))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
