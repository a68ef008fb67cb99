"""The coreset step alone at 16k / 64k / 256k patches: CPU seconds, wall seconds, covering radius.

    python benchmarks/peers/patchcore_coreset_timing.py [--work /tmp/texture_scale128]
        [--sizes 16k 64k 256k] [--methods exact pca128 sparse_auto] [--max-rounds 0]

Patches are real: AICore PatchCore embeddings (resnet18 layers 2-3, the seed-0 random-init
weights of anomaly.py) of brick training crops from texture_data.py (1,000 crops of 128 px):
250 crops at 64 px = 16,000 patches, 1,000 at 64 px = 64,000, 1,000 at 128 px = 256,000 (x 384
channels). Each method picks 10 % with k_center_greedy: exact (all channels), pcaK (the first
K principal axes) or sparse_auto (a sparse random projection to jl_dim(N), PatchCore's
default). --max-rounds N stops after N picks and scales the time to the full count (every round costs the same: one pass over all patches);
the radius is then not given. CPU seconds are time.process_time of this process (robust to
other jobs on a shared machine), wall seconds are not.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from aicore.tasks.anomaly.coreset import (jl_dim, k_center_greedy, pca_projection,  # noqa: E402
                                          random_projection)
from aicore.tasks.anomaly.datasets import MVTecDataset  # noqa: E402
from aicore.tasks.anomaly.models import PatchCore  # noqa: E402

SETS = {"16k": (64, 250), "64k": (64, 1000), "256k": (128, 1000)}


def patches(work: Path, name: str, weights: Path) -> torch.Tensor:
    cache = work / f"patches_{name}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    if not (work / "brick").exists():
        subprocess.run([sys.executable, str(HERE / "texture_data.py"), str(work), "--train",
                        "1000", "--good", "2", "--defects", "3", "--size", "128",
                        "--categories", "brick"], check=True, stdout=subprocess.DEVNULL)
    size, n_img = SETS[name]
    model = PatchCore("resnet18", [2, 3], pretrained=str(weights), input_size=(size, size))
    ds = MVTecDataset(str(work), "train", category="brick", input_size=[size, size])
    ds.samples = ds.samples[:n_img]
    out = []
    with torch.inference_mode():
        for x, *_ in DataLoader(ds, batch_size=50):
            e = model.eval().embed(x)
            out.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    feats = torch.cat(out).contiguous()
    torch.save(feats, cache)
    return feats


def covering_radius(feats: torch.Tensor, bank: torch.Tensor) -> float:
    return float(torch.cat([torch.cdist(feats[s:s + 4096], bank).amin(1)
                            for s in range(0, feats.shape[0], 4096)]).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/texture_scale128"))
    ap.add_argument("--weights", type=Path, default=Path("/tmp/texture_ad_runs/resnet18_seed0.pth"))
    ap.add_argument("--sizes", nargs="+", default=list(SETS))
    ap.add_argument("--methods", nargs="+", default=["exact", "pca128"])
    ap.add_argument("--max-rounds", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "patchcore_coreset_timing.json")
    args = ap.parse_args()
    if not args.weights.exists():
        args.weights.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        import timm
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), args.weights)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for name in args.sizes:
        feats = patches(args.work, name, args.weights)
        n_select = math.ceil(0.1 * feats.shape[0])
        rounds = min(n_select, args.max_rounds) if args.max_rounds else n_select
        for method in args.methods:
            t0, c0 = time.perf_counter(), time.process_time()
            x = feats
            if method.startswith("pca"):
                x = feats @ pca_projection(feats, int(method[3:]))
            elif method == "sparse_auto":  # PatchCore's default, anomalib's method
                x = feats @ random_projection(feats.shape[1], jl_dim(feats.shape[0]), "sparse")
            t1, c1 = time.perf_counter(), time.process_time()
            idx = k_center_greedy(x, rounds, None, seed=0)
            scale = n_select / rounds  # the projection once, the rounds scaled to all picks
            wall = t1 - t0 + (time.perf_counter() - t1) * scale
            cpu = c1 - c0 + (time.process_time() - c1) * scale
            row = {"patches": feats.shape[0], "dim": feats.shape[1], "picks": n_select,
                   "method": method, "rounds_timed": rounds, "cpu_s": cpu, "wall_s": wall,
                   "radius": covering_radius(feats, feats[idx]) if rounds == n_select else None}
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
