"""Which coreset search gives PatchCore the best memory bank? AICore's PatchCore on the texture
set of texture_data.py, one fit's patches, banks chosen by several k-center variants.

    python benchmarks/peers/patchcore_coreset_variants.py [--root /tmp/texture_ad]
        [--seeds 0 1 2 3 4] [--starts 3] [--image-size 64] [--out ...json]

For each (category, backbone seed: the random-init resnet18 of anomaly.py) the training and test
embeddings are computed once; each variant then picks a bank (10 %) for `--starts` coreset seeds
and the test split is scored with it: image AUROC, pixel AUROC, PRO (maps at 128 px, the metric
code of anomaly.py), for bilinear (AICore) and nearest (anomalib) upsampling of the patch
scores, plus the covering radius of the bank over all training patches (full dimension).
Variants: exact search on the 384 channels; dense Gaussian projections to 128 dims and to the
Johnson-Lindenstrauss size anomalib uses (eps 0.9: about 200 dims for 3,840 patches); a very
sparse +-1 projection of that size (density 1/sqrt(D), anomalib's SparseRandomProjection);
the first 128 / 64 principal axes of the patches (PCA, no randomness but the start);
"anomalib": anomalib 2.7.0's KCenterGreedy itself (needs the anomalib venv's python, which sees
the project's packages too), so the only difference to AICore's runs is the selection.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))
from anomaly import metrics  # noqa: E402
from aicore.tasks.anomaly.coreset import (jl_dim, k_center_greedy, pca_projection,  # noqa: E402
                                          random_projection)
from aicore.tasks.anomaly.datasets import MVTecDataset  # noqa: E402
from aicore.tasks.anomaly.models import PatchCore  # noqa: E402

VARIANTS = {"exact": (None, "gaussian"), "gauss128": (128, "gaussian"),
            "gaussJL": ("jl", "gaussian"), "sparseJL": ("jl", "sparse"), "pca128": (128, "pca"),
            "pca64": (64, "pca"), "anomalib": (None, "anomalib")}


def anomalib_coreset(feats: torch.Tensor, seed: int) -> torch.Tensor:
    """anomalib 2.7.0's own KCenterGreedy (run this script with the anomalib venv's python),
    seeded through torch's and numpy's global generators, which it draws from."""
    from anomalib.models.components import KCenterGreedy
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.tensor(KCenterGreedy(embedding=feats, sampling_ratio=0.1)
                        .select_coreset_idxs())


def embed_all(model: PatchCore, ds: MVTecDataset) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.embed(x) for x, *_ in DataLoader(ds, batch_size=32)])


def radius(feats: torch.Tensor, bank: torch.Tensor) -> float:
    """Largest distance from a training patch to its nearest bank entry."""
    best = torch.cat([torch.cdist(feats[s:s + 4096], bank).amin(1)
                      for s in range(0, feats.shape[0], 4096)])
    return float(best.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/texture_ad"))
    ap.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=HERE / "patchcore_coreset_variants.json")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --out")
    args = ap.parse_args()
    work = args.root.parent / (args.root.name + "_runs")
    size = [args.image_size] * 2
    rows = json.loads(args.out.read_text()) if args.append and args.out.exists() else []
    tmp = Path(tempfile.mkdtemp())
    for seed in args.seeds:
        weights = work / f"resnet18_seed{seed}.pth"
        model = PatchCore("resnet18", [2, 3], 0.1, 9, pretrained=str(weights),
                          input_size=size).eval()
        for cat in args.categories:
            train = MVTecDataset(str(args.root), "train", category=cat, input_size=size)
            test = MVTecDataset(str(args.root), "test", category=cat, input_size=size)
            native = test.load_image(0).shape[:2]
            e = embed_all(model, train)
            feats = e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]).contiguous()
            x_test = torch.stack([test[i][0] for i in range(len(test))])
            n_select = math.ceil(0.1 * feats.shape[0])
            for name in args.variants:
                dim, kind = VARIANTS[name]
                for start in range(args.starts):
                    cs = 1000 * start + seed
                    t0, c0 = time.perf_counter(), time.process_time()
                    if kind == "anomalib":
                        idx = anomalib_coreset(feats, cs)
                    elif dim is None:
                        idx = k_center_greedy(feats, n_select, None, seed=cs)
                    else:
                        d = jl_dim(feats.shape[0]) if dim == "jl" else dim
                        proj = (pca_projection(feats, d) if kind == "pca" else
                                random_projection(feats.shape[1], d, kind, seed=cs))
                        idx = k_center_greedy(feats @ proj, n_select, None, seed=cs)
                    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                    model.memory_bank = feats[idx].contiguous()
                    model.n_train.fill_(1)
                    with torch.inference_mode():
                        amap, score = model(x_test)
                        patch = model.score_patches(x_test)[0]
                        near = model.blur(F.interpolate(patch[:, None], size=size,
                                                        mode="nearest"))
                    row = {"category": cat, "seed": seed, "start": start, "variant": name,
                           "coreset_s": secs, "coreset_cpu_s": cpu,
                           "radius": radius(feats, model.memory_bank)}
                    for tag, m in (("", amap), ("nearest_", near)):
                        npz = tmp / "m.npz"
                        m = F.interpolate(m, size=native, mode="bilinear", align_corners=False)
                        np.savez(npz, paths=np.array([s[0] for s in test.samples]),
                                 scores=score.double().numpy(), maps=m[:, 0].numpy(),
                                 seconds=0.0)
                        got = metrics(npz)
                        for k in ("image_auroc", "pixel_auroc", "pro"):
                            row[tag + k] = got[k]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            args.out.write_text(json.dumps(rows, indent=1))
    print(summary(rows))


def summary(rows: list[dict]) -> str:
    keys = ["image_auroc", "pixel_auroc", "pro", "nearest_pixel_auroc", "nearest_pro",
            "radius", "coreset_cpu_s"]
    out = ["| category | variant | runs | " + " | ".join(keys) + " |",
           "|---|---|---|" + "---|" * len(keys)]
    for cat in sorted({r["category"] for r in rows}) + ["all"]:
        for var in VARIANTS:
            sel = [r for r in rows if r["variant"] == var and cat in ("all", r["category"])]
            if not sel:
                continue
            cells = []
            for k in keys:
                v = np.array([r[k] for r in sel])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            out.append(f"| {cat} | {var} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
