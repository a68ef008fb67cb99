"""One anomalib 2.7.0 run (run with the peer venv's python, see anomalib_venv.sh).

    python anomaly_anomalib_run.py ROOT CATEGORY MODEL SEED WEIGHTS OUT.npz [--image-size N]

Fits anomalib's PaDiM or PatchCore with its Engine on ROOT/CATEGORY (MVTec layout), predicts
the test split and saves, per test image, the path, the image score and the anomaly map
(resized to the image's own size), plus the seconds of fit + predict. The backbone is
timm resnet18 with the weights in WEIGHTS (the same random init AICore loads); for PaDiM the
100 channels are the ones AICore picks for SEED, so both sides compute the same features.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("root", "category", "model", "seed", "weights", "out"):
        ap.add_argument(name)
    ap.add_argument("--image-size", type=int, default=0, help="0 = anomalib's default (256)")
    args = ap.parse_args()
    torch.set_num_threads(int(torch.get_num_threads()))
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Padim, Patchcore

    seed = int(args.seed)
    torch.manual_seed(seed)
    root = Path(args.root) / args.category
    pre = True
    if args.image_size:
        pre = Padim.configure_pre_processor((args.image_size, args.image_size))
    if args.model == "PaDiM":
        model = Padim(backbone="resnet18", layers=["layer1", "layer2", "layer3"],
                      pre_trained=False, n_features=100, pre_processor=pre)
        g = torch.Generator().manual_seed(seed)
        total = sum(model.model.feature_extractor.out_dims)
        model.model.idx.copy_(torch.randperm(total, generator=g)[:100].sort().values)
    else:
        model = Patchcore(backbone="resnet18", layers=["layer2", "layer3"], pre_trained=False,
                          coreset_sampling_ratio=0.1, num_neighbors=9, pre_processor=pre)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    missing, _ = model.model.feature_extractor.feature_extractor.load_state_dict(state,
                                                                               strict=False)
    if missing:
        raise SystemExit(f"weights do not fit anomalib's backbone: missing {missing[:3]}")
    dm = Folder(name=args.category, root=root, normal_dir="train/good",
                abnormal_dir=[str(p.relative_to(root)) for p in sorted((root / "test").iterdir())
                              if p.name != "good"],
                normal_test_dir="test/good", mask_dir=[
                    str(p.relative_to(root)) for p in sorted((root / "ground_truth").iterdir())],
                train_batch_size=32, eval_batch_size=32, num_workers=0, seed=seed,
                val_split_mode="same_as_test")
    dm.setup()
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    default_root_dir=str(Path(args.out).with_suffix("")) + "_work")
    t0 = time.perf_counter()
    engine.fit(model=model, datamodule=dm)
    preds = engine.predict(model=model, dataloaders=dm.test_dataloader())
    seconds = time.perf_counter() - t0
    paths, scores, maps = [], [], []
    for batch in preds:
        amap = batch.anomaly_map
        if amap.ndim == 3:
            amap = amap[:, None]
        for p, s, m in zip(batch.image_path, batch.pred_score.reshape(-1), amap):
            from PIL import Image
            w, h = Image.open(p).size
            m = F.interpolate(m[None].float(), size=(h, w), mode="bilinear",
                              align_corners=False)[0, 0]
            paths.append(str(p))
            scores.append(float(s))
            maps.append(m.numpy())
    np.savez(args.out, paths=np.array(paths), scores=np.array(scores, np.float64),
             maps=np.stack(maps).astype(np.float32), seconds=seconds)


if __name__ == "__main__":
    main()
