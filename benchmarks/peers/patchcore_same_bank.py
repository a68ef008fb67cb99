"""PatchCore, AICore vs anomalib 2.7.0 with the same memory bank: where do the maps differ?

    benchmarks/.venv-anomalib/bin/python benchmarks/peers/patchcore_same_bank.py ROOT CATEGORY \
        SEED WEIGHTS OUT_DIR [--image-size 64]

Runs in the anomalib venv (which also sees the project's packages, so both models run in one
process on identical tensors). Fits anomalib's Patchcore with its Engine exactly as
anomaly_anomalib_run.py does, takes its memory bank, loads it into AICore's PatchCore and
compares, one step at a time: input tensors (anomalib's torchvision resize vs AICore's
MVTecDataset), embeddings, patch distances, the upsampled map (nearest vs bilinear), the
blurred map, image scores. Every variant's maps and scores are written as OUT_DIR/<name>.npz
(the layout anomaly.py scores) and scored with anomaly.py's metrics; the bank is saved as
OUT_DIR/anomalib_bank.pt. Prints one JSON object with the differences and the metrics.
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
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the larger of the two ranges."""
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) / scale


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("root", "category", "seed", "weights", "out"):
        ap.add_argument(name)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Padim, Patchcore

    from anomaly import metrics
    from aicore.tasks.anomaly.datasets import MVTecDataset
    from aicore.tasks.anomaly.models import PatchCore

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed, size = int(args.seed), int(args.image_size)
    torch.manual_seed(seed)
    root = Path(args.root) / args.category
    model = Patchcore(backbone="resnet18", layers=["layer2", "layer3"], pre_trained=False,
                      coreset_sampling_ratio=0.1, num_neighbors=9,
                      pre_processor=Padim.configure_pre_processor((size, size)))
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    model.model.feature_extractor.feature_extractor.load_state_dict(state, strict=False)
    dm = Folder(name=args.category, root=root, normal_dir="train/good",
                abnormal_dir=[str(p.relative_to(root)) for p in sorted((root / "test").iterdir())
                              if p.name != "good"],
                normal_test_dir="test/good", mask_dir=[
                    str(p.relative_to(root)) for p in sorted((root / "ground_truth").iterdir())],
                train_batch_size=32, eval_batch_size=32, num_workers=0, seed=seed,
                val_split_mode="same_as_test")
    dm.setup()
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    default_root_dir=str(out / "work"))
    engine.fit(model=model, datamodule=dm)
    bank = model.model.memory_bank.detach().clone()
    torch.save(bank, out / "anomalib_bank.pt")
    lib = model.model.eval()

    # anomalib's test inputs (its dataset + pre-processor transform) and AICore's, same order
    lib_x, paths = [], []
    for batch in dm.test_dataloader():
        lib_x.append(model.pre_processor.transform(batch.image))
        paths += [str(p) for p in batch.image_path]
    lib_x = torch.cat(lib_x)
    test = MVTecDataset(args.root, "test", category=args.category, input_size=[size, size])
    where = {str(Path(s[0])): i for i, s in enumerate(test.samples)}
    ai_x = torch.stack([test[where[str(Path(p))]][0] for p in paths])
    native = test.load_image(0).shape[:2]

    ai = PatchCore("resnet18", [2, 3], 0.1, 9, pretrained=args.weights, input_size=(size, size),
                   seed=seed).eval()
    ai.memory_bank = bank.clone()
    ai.n_train.fill_(1)
    report: dict = {"category": args.category, "seed": seed, "image_size": size,
                    "bank": list(bank.shape), "inputs_rel": rel(lib_x, ai_x),
                    "inputs_max_abs": float((lib_x - ai_x).abs().max())}

    def save(name: str, maps: torch.Tensor, scores: torch.Tensor) -> dict:
        m = F.interpolate(maps.float(), size=native, mode="bilinear", align_corners=False)
        path = out / f"{name}.npz"
        np.savez(path, paths=np.array(paths), scores=scores.double().numpy(),
                 maps=m[:, 0].numpy(), seconds=0.0)
        got = metrics(path)
        return {k: got[k] for k in ("image_auroc", "pixel_auroc", "pro")}

    with torch.inference_mode():
        res = lib(lib_x)
        lib_map, lib_score = res.anomaly_map, res.pred_score
        # step by step on anomalib's inputs
        feats = lib.feature_extractor(lib_x)
        feats = {k: lib.feature_pooler(v) for k, v in feats.items()}
        lib_emb = lib.generate_embedding(feats)
        ai_emb = ai.embed(lib_x)
        report["embedding_rel"] = rel(lib_emb, ai_emb)
        b, _, h, w = lib_emb.shape
        lib_patch, _ = lib.nearest_neighbors(lib.reshape_embedding(lib_emb), 1)
        ai_patch, ai_score = ai.score_patches(lib_x)
        report["patch_rel"] = rel(lib_patch.reshape(b, h, w), ai_patch)
        report["image_score_rel"] = rel(lib_score.reshape(-1), ai_score)
        ai_map, _ = ai(lib_x)
        near = ai.blur(F.interpolate(ai_patch[:, None], size=lib_x.shape[-2:], mode="nearest"))
        report["map_rel_bilinear"] = rel(lib_map, ai_map)
        report["map_rel_nearest"] = rel(lib_map, near)
        blur_only = lib.anomaly_map_generator.blur(
            F.interpolate(ai_patch[:, None], size=lib_x.shape[-2:], mode="nearest"))
        report["blur_rel"] = rel(blur_only, near)
        own_map, own_score = ai(ai_x)
        own_near = ai.blur(F.interpolate(ai.score_patches(ai_x)[0][:, None], size=(size, size),
                                         mode="nearest"))
    # what anomaly_anomalib_run.py scores: Engine.predict, i.e. after anomalib's post-processor
    # (maps and scores normalised by the validation range and clamped to [0, 1])
    post_map, post_score = [], []
    for batch in engine.predict(model=model, dataloaders=dm.test_dataloader()):
        amap = batch.anomaly_map
        post_map.append(amap if amap.ndim == 4 else amap[:, None])
        post_score.append(batch.pred_score.reshape(-1))
    post_map, post_score = torch.cat(post_map), torch.cat(post_score)
    report["post_processed_share_at_0_or_1"] = float(((post_map == 0) | (post_map == 1))
                                                      .float().mean())
    report["metrics"] = {
        "anomalib Engine.predict (post-processed, as anomaly.py scores it)": save(
            "anomalib_post", post_map, post_score),
        "anomalib (its bank, its inputs)": save("anomalib_raw", lib_map, lib_score),
        "aicore, anomalib bank, anomalib inputs, bilinear": save("ai_libbank_libx", ai_map,
                                                                  ai_score),
        "aicore, anomalib bank, anomalib inputs, nearest": save("ai_libbank_libx_near", near,
                                                                 ai_score),
        "aicore, anomalib bank, aicore inputs, bilinear": save("ai_libbank_aix", own_map,
                                                                own_score),
        "aicore, anomalib bank, aicore inputs, nearest": save("ai_libbank_aix_near", own_near,
                                                               own_score),
    }
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
