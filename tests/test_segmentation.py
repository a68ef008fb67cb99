"""Semantic segmentation: dataset checks, metrics against independent computations, sliding
window, losses, and train -> eval -> demo -> export through the CLI on tiny data."""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_cli, write_config

TINY_MODEL = {"type": "SMPModel", "arch": "Unet", "encoder_name": "tu-resnet10t",
              "encoder_weights": None, "encoder_depth": 3, "decoder_channels": [16, 16, 8]}


def seg_config(root: Path, work_dir: Path, **overrides) -> dict:
    """A fast segmentation config on the tiny data set (32x32 images)."""
    cfg = {
        "task": "segmentation",
        "work_dir": str(work_dir),
        "seed": 0,
        "data": {"root": str(root), "in_channels": 3, "input_size": [32, 32], "batch_size": 4,
                 "num_workers": 0, "dataset": {"type": "SegmentationDataset", "cache": True},
                 "train": {"transforms": [
                     {"type": "HorizontalFlip", "p": 0.5},
                     {"type": "Affine", "rotate": [-15, 15], "fill_mask": 255, "p": 0.5}]}},
        "model": dict(TINY_MODEL),
        "loss": {"type": "CombinedLoss",
                 "losses": [{"type": "CrossEntropyLoss"}, {"type": "DiceLoss"}],
                 "weights": [1.0, 0.5]},
        "optimizer": {"type": "AdamW", "lr": 0.003},
        "scheduler": {"type": "cosine", "warmup_epochs": 0},
        "train": {"epochs": 1, "progress": False},
        "export": {"parity_images": 2},
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory) -> Path:
    from aicore.tasks.segmentation.synthetic import make
    return make(tmp_path_factory.mktemp("segdata") / "seg", size=32, n_train=8, n_val=4,
                n_test=2)


@pytest.fixture
def bad_root(seg_root, tmp_path) -> Path:
    """A private copy of the tiny data set for a test to break."""
    return Path(shutil.copytree(seg_root, tmp_path / "bad"))


@pytest.fixture(scope="module")
def seg_run(seg_root, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-epoch run: (config path, work_dir)."""
    base = tmp_path_factory.mktemp("segrun")
    cfg = write_config(base / "seg.json", seg_config(seg_root, base / "run",
                                                     **{"train.epochs": 2}))
    assert run_cli("-c", str(cfg)) == 0
    return cfg, base / "run"


# ------------------------------------------------------------------------------------------
# configs


def test_every_segmentation_config_validates():
    files = sorted((ROOT / "configs" / "segmentation").glob("*.json"))
    assert len(files) >= 11
    for f in files:
        assert run_cli("-c", str(f), "--check", cwd=ROOT) == 0, f


def test_every_architecture_config_builds_and_runs():
    """Each per-architecture config builds (random init) and maps a batch to class logits."""
    from aicore import config as C
    from aicore.tasks import import_tasks
    from aicore.tasks.segmentation.models import logits_of, required_stride
    from aicore.registry import MODELS
    import_tasks()
    archs = set()
    for f in sorted((ROOT / "configs" / "segmentation").glob("*.json")):
        cfg = C.load_config(f)
        node = cfg.model.toDict()
        archs.add(node["arch"])
        model = C.build(node, MODELS, "model", cfg, in_chans=3, num_classes=3).eval()
        h, w = (int(s) for s in cfg.data.input_size)
        assert h % required_stride(model) == 0 and w % required_stride(model) == 0, f
        with torch.no_grad():
            out = logits_of(model(torch.randn(1, 3, h, w)))
        assert out.shape == (1, 3, h, w), f
    assert {"Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet",
            "MAnet", "PAN", "UPerNet", "Segformer"} <= archs


def test_unknown_arch_and_encoder_fail_with_suggestions(seg_root, tmp_path, capsys):
    for key, value, expect in (("model.arch", "Unett", "Unet"),
                               ("model.encoder_name", "resnet181", "resnet18")):
        cfg = write_config(tmp_path / "c.json", seg_config(seg_root, tmp_path / "run",
                                                           **{key: value}))
        assert run_cli("-c", str(cfg)) == 2
        err = capsys.readouterr().err
        assert value in err and expect in err
        assert not (tmp_path / "run").exists()


def test_bad_sliding_window_value_is_a_config_error(seg_root, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.json", seg_config(
        seg_root, tmp_path / "run", **{"eval.sliding_window": {"overlap": 1.5}}))
    assert run_cli("-c", str(cfg)) == 2
    assert "eval.sliding_window.overlap" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# dataset


def _train_fails(root: Path, tmp_path: Path, capsys) -> str:
    cfg = write_config(tmp_path / "c.json", seg_config(root, tmp_path / "run"))
    assert run_cli("-c", str(cfg)) == 2
    assert not (tmp_path / "run").exists(), "nothing may be written on bad input"
    return capsys.readouterr().err


def test_mask_size_mismatch(bad_root, tmp_path, capsys):
    mask = bad_root / "masks" / "train_0003.png"
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(mask)
    err = _train_fails(bad_root, tmp_path, capsys)
    assert str(mask) in err and "32x20" in err and "size" in err


def test_class_index_beyond_labels(bad_root, tmp_path, capsys):
    mask = bad_root / "masks" / "train_0002.png"
    arr = np.array(Image.open(mask))
    arr[0, 0] = 7  # labels.txt has 3 classes; 255 stays legal
    Image.fromarray(arr).save(mask)
    err = _train_fails(bad_root, tmp_path, capsys)
    assert str(mask) in err and "class index 7" in err and "labels.txt" in err


def test_missing_mask(bad_root, tmp_path, capsys):
    (bad_root / "masks" / "val_0001.png").unlink()
    err = _train_fails(bad_root, tmp_path, capsys)
    assert "val_0001" in err and "mask" in err and "val.txt" in err


def test_colour_mask_and_missing_labels(bad_root, tmp_path, capsys):
    mask = bad_root / "masks" / "train_0000.png"
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 128
    Image.fromarray(rgb).save(mask)
    err = _train_fails(bad_root, tmp_path, capsys)
    assert str(mask) in err and "palette" in err
    (bad_root / "labels.txt").unlink()
    assert "labels.txt" in _train_fails(bad_root, tmp_path, capsys)


def test_palette_masks_read_as_indices(tmp_path):
    from aicore.tasks.segmentation.datasets import SegmentationDataset, read_mask
    from aicore.tasks.segmentation.synthetic import make
    kw = dict(size=32, n_train=3, n_val=1, n_test=1, seed=3)
    idx = make(tmp_path / "index", **kw)
    pal = make(tmp_path / "palette", layout="palette", **kw)
    with Image.open(pal / "masks" / "train_0000.png") as im:
        assert im.mode == "P"
    for i in range(3):
        a = read_mask(idx / "masks" / f"train_{i:04d}.png")
        b = read_mask(pal / "masks" / f"train_{i:04d}.png")
        assert np.array_equal(a, b) and set(np.unique(b)) <= {0, 1, 2, 255}
    ds = SegmentationDataset(str(pal), "train", input_size=[32, 32])
    assert ds.classes == ["background", "stain", "chip"]
    assert sum(ds.class_counts) > 0 and ds.ignored_pixels > 0


def test_one_channel_dataset_and_model(tmp_path):
    from aicore.tasks.segmentation.datasets import SegmentationDataset
    from aicore.tasks.segmentation.synthetic import make
    root = make(tmp_path / "gray", channels=1, size=32, n_train=6, n_val=2, n_test=1)
    ds = SegmentationDataset(str(root), "train", in_channels=1, input_size=[32, 32])
    img, mask, i = ds[0]
    assert img.shape == (1, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64
    cfg = write_config(tmp_path / "c.json", seg_config(
        root, tmp_path / "run", **{"data.in_channels": 1, "export.formats": ["onnx"]}))
    assert run_cli("-c", str(cfg)) == 0
    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0
    manifest = json.loads((tmp_path / "run" / "export" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 1, 32, 32]


def test_transforms_keep_image_and_mask_aligned(seg_root):
    """A flip/rotate/crop pipeline moves mask pixels exactly with image pixels."""
    from aicore.data.transforms import build_pipeline
    from aicore.tasks.segmentation.datasets import SegmentationDataset
    pipeline = build_pipeline([{"type": "HorizontalFlip", "p": 1.0},
                               {"type": "RandomRotate90", "p": 1.0},
                               {"type": "RandomCrop", "height": 24, "width": 24}], "t")
    ds = SegmentationDataset(str(seg_root), "train", transform=None, input_size=None)
    img, mask = ds.load(0)
    # encode each pixel's position in the image so the mask can be checked against it
    h, w = mask.shape
    code = (np.arange(h * w) % 251).reshape(h, w).astype(np.uint8)
    out = pipeline(image=np.dstack([code] * 3), mask=code)
    assert out["mask"].shape == (24, 24)
    assert np.array_equal(out["image"][..., 0], out["mask"])


# ------------------------------------------------------------------------------------------
# metrics


def _random_pairs(seed: int, n: int = 5, classes: int = 4, size=(19, 23)):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        target = torch.randint(0, classes, (2, *size), generator=g)
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target,
                           torch.randint(0, classes, target.shape, generator=g))
        target[torch.rand(target.shape, generator=g) < 0.1] = 255  # ignore pixels
        pairs.append((pred, target))
    return pairs


def test_evaluator_matches_numpy_and_smp():
    import segmentation_models_pytorch as smp
    from aicore.tasks.segmentation.evaluator import SegmentationEvaluator
    classes = 4
    pairs = _random_pairs(0, classes=classes)
    ev = SegmentationEvaluator(classes, ["a", "b", "c", "d"])
    for k, (pred, target) in enumerate(pairs):
        logits = torch.nn.functional.one_hot(pred, classes).permute(0, 3, 1, 2).float()
        ev.update(logits if k % 2 else pred, (target, torch.tensor([2 * k, 2 * k + 1])))
    m = ev.compute()

    # numpy: one confusion matrix over all valid pixels of all images
    p = np.concatenate([x.numpy().ravel() for x, _ in pairs])
    t = np.concatenate([y.numpy().ravel() for _, y in pairs])
    keep = t != 255
    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (t[keep], p[keep]), 1)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    dice = 2 * tp / (cm.sum(0) + cm.sum(1))
    assert m["mIoU"] == pytest.approx(iou.mean(), abs=1e-12)
    assert m["mDice"] == pytest.approx(dice.mean(), abs=1e-12)
    assert m["pixel_acc"] == pytest.approx(tp.sum() / keep.sum(), abs=1e-12)
    for c, name in enumerate("abcd"):
        assert m["per_class"][name]["IoU"] == pytest.approx(iou[c], abs=1e-12)
        assert m["per_class"][name]["Dice"] == pytest.approx(dice[c], abs=1e-12)
        assert m["per_class"][name]["pixels"] == cm[c].sum()

    # smp.metrics: per-image stats summed over the data set ("micro" over images, per class)
    preds = torch.cat([x for x, _ in pairs])
    targets = torch.cat([y for _, y in pairs])
    stats = smp.metrics.get_stats(preds, targets, mode="multiclass", num_classes=classes,
                                  ignore_index=255)
    tp_, fp_, fn_, tn_ = (s.sum(0) for s in stats)
    smp_iou = smp.metrics.iou_score(tp_, fp_, fn_, tn_, reduction="none")
    smp_f1 = smp.metrics.f1_score(tp_, fp_, fn_, tn_, reduction="none")
    assert m["mIoU"] == pytest.approx(float(smp_iou.mean()), abs=1e-6)
    assert m["mDice"] == pytest.approx(float(smp_f1.mean()), abs=1e-6)
    # per-image scores are kept for predictions.csv, one per image, in sample order
    assert [i for i, *_ in ev.per_image] == list(range(2 * len(pairs)))


def test_evaluator_is_independent_of_batching_and_skips_absent_classes():
    from aicore.tasks.segmentation.evaluator import SegmentationEvaluator
    pairs = _random_pairs(1, classes=3)
    whole = SegmentationEvaluator(4)  # class 3 never occurs: no IoU, not in the mean
    split = SegmentationEvaluator(4)
    whole.update(torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs]))
    for p, t in pairs:
        for k in range(p.shape[0]):
            split.update(p[k:k + 1], t[k:k + 1])
    a, b = whole.compute(), split.compute()
    assert a == b
    assert a["per_class"]["3"]["IoU"] is None and a["per_class"]["3"]["pixels"] == 0
    present = [a["per_class"][str(c)]["IoU"] for c in range(3)]
    assert a["mIoU"] == pytest.approx(np.mean(present))
    # pixels labelled 255 never count, whatever is predicted there
    p, t = pairs[0]
    ev = SegmentationEvaluator(4)
    ev.update(torch.where(t == 255, torch.full_like(p, 3), p), t)
    ref = SegmentationEvaluator(4)
    ref.update(p, t)
    assert ev.compute() == ref.compute()


# ------------------------------------------------------------------------------------------
# sliding window, losses


def test_sliding_window_shape_and_equivalence():
    from aicore.tasks.segmentation.inference import SlidingWindow, sliding_window_logits
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, 5, 1)  # per-pixel model: tiling must not change its output
    x = torch.randn(2, 3, 50, 77)
    for blend in ("gaussian", "mean"):
        for overlap in (0.0, 0.25, 0.5):
            y = sliding_window_logits(pointwise, x, SlidingWindow((32, 32), overlap, blend, 3))
            assert y.shape == (2, 5, 50, 77)
            assert torch.allclose(y, pointwise(x), atol=1e-5)
    small = torch.randn(1, 3, 20, 12)  # smaller than a window: padded, then cropped back
    y = sliding_window_logits(pointwise, small, SlidingWindow((32, 32)))
    assert y.shape == (1, 5, 20, 12) and torch.allclose(y, pointwise(small), atol=1e-5)
    # every window is seen once: count calls for a 64x64 image, 32 window, overlap 0.5 -> 3x3
    seen = []
    sliding_window_logits(lambda t: seen.append(t.shape[0]) or pointwise(t),
                          torch.randn(1, 3, 64, 64), SlidingWindow((32, 32), 0.5, "mean", 4))
    assert sum(seen) == 9


def test_losses_ignore_255_and_combined_sum():
    from aicore import config as C
    from aicore.registry import LOSSES
    from aicore.tasks import import_tasks
    import_tasks()
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    target[:, :4] = 255
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    other = logits.detach().clone()
    other[:, :, :4] = 100 * torch.randn(2, 3, 4, 16)  # only ignored pixels differ
    for name in ("CrossEntropyLoss", "DiceLoss", "JaccardLoss", "TverskyLoss", "LovaszLoss",
                 "SegFocalLoss"):
        fn = C.build({"type": name}, LOSSES, "loss", num_classes=3, ignore_index=255)
        a, b = fn(logits, target), fn(other, target)
        assert torch.isfinite(a) and torch.allclose(a, b, atol=1e-5), name
    combined = C.build({"type": "CombinedLoss", "losses": [{"type": "CrossEntropyLoss"},
                                                           {"type": "DiceLoss"}],
                        "weights": [1.0, 0.5]}, LOSSES, "loss", num_classes=3, ignore_index=255)
    total = combined(logits, target)
    parts = combined.last_parts
    assert set(parts) == {"CrossEntropyLoss", "DiceLoss"}
    assert total.item() == pytest.approx(parts["CrossEntropyLoss"].item()
                                         + 0.5 * parts["DiceLoss"].item(), rel=1e-5)
    total.backward()
    assert logits.grad[:, :, :4].abs().max() == 0  # no gradient from ignored pixels


def test_loss_without_ignore_index_is_rejected(seg_root, tmp_path, capsys):
    for loss in ({"type": "FocalLoss"},
                 {"type": "CombinedLoss", "losses": [{"type": "DiceLoss"}, {"type": "PolyLoss"}]},
                 {"type": "CombinedLoss", "losses": [{"type": "DiceLoss"}], "weights": [1, 2]}):
        cfg = write_config(tmp_path / "c.json", seg_config(seg_root, tmp_path / "run",
                                                           loss=loss))
        assert run_cli("-c", str(cfg)) == 2
        err = capsys.readouterr().err
        assert "loss" in err and ("ignore_index" in err or "weights" in err)
        assert not (tmp_path / "run").exists()
    # a typo inside a CombinedLoss part is caught by config validation, with the path
    cfg = write_config(tmp_path / "c.json", seg_config(
        seg_root, tmp_path / "run", loss={"type": "CombinedLoss",
                                          "losses": [{"type": "DiceLoss", "smoth": 1.0}]}))
    assert run_cli("-c", str(cfg)) == 2
    assert "loss.losses.0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# end to end


def test_train_eval_demo_export(seg_run, seg_root):
    cfg, run = seg_run
    for name in ("config.json", "train.log", "metrics.jsonl", "checkpoints/last.pth",
                 "checkpoints/best.pth"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"mIoU", "mDice", "pixel_acc", "val_loss", "per_class"} <= set(r)
        assert 0 <= r["mIoU"] <= 1 and 0 <= r["pixel_acc"] <= 1 and r["val_loss"] > 0
    assert (run / "results.png").is_file() and (run / "results.csv").is_file()

    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"mIoU", "mDice", "pixel_acc", "per_class"}
    assert set(metrics["per_class"]) == {"background", "stain", "chip"}
    assert set(metrics["per_class"]["stain"]) >= {"IoU", "Dice"}
    for name in ("per_class_iou.png", "confusion_matrix.png", "confusion_matrix.csv"):
        assert (run / "eval" / name).stat().st_size > 0
    rows = list(csv.DictReader(open(run / "eval" / "predictions.csv")))
    assert len(rows) == 4 and {"image", "mIoU", "IoU_stain"} <= set(rows[0])

    # the test split's images are twice the training size: sliding window at full resolution
    out = run / "eval_test_sw"
    assert run_cli("-c", str(cfg), "-o", "mode=eval", "-o", "eval.split=test", "-o",
                   "eval.sliding_window=true", "-o", f"eval.out={out}") == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 2 and all(int(r["pixels"]) > 32 * 32 for r in rows)

    for extra in ([], ["-o", "demo.sliding_window={\"overlap\": 0.25}"]):
        demo = run / ("demo_sw" if extra else "demo")
        assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o",
                       f"demo.source={seg_root / 'images'}", "-o", "demo.max_images=3",
                       "-o", f"demo.out={demo}", *extra) == 0
        pngs = sorted(demo.glob("*.png"))
        assert len(pngs) == 3
        rows = list(csv.DictReader(open(demo / "predictions.csv")))
        assert len(rows) == 3 and {"classes_present", "mean_confidence",
                                   "fraction_stain"} <= set(rows[0])
        fractions = [float(rows[0][f"fraction_{c}"]) for c in ("background", "stain", "chip")]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-4)
        # predicted class-index masks at each source image's own size (test images: 64 px)
        for row in rows:
            src = Path(row["source"])
            with Image.open(demo / "pred_masks" / src.relative_to(seg_root / "images")) as im:
                with Image.open(src) as orig:
                    assert im.mode == "P" and im.size == orig.size
                assert np.array(im).max() < 3

    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0
    export = run / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    assert (export / "model.onnx").stat().st_size > 0
    assert (export / "model.torchscript").stat().st_size > 0
    assert manifest["task"] == "segmentation" and manifest["outputs"] == ["logits", "probs"]
    assert manifest["classes"] == ["background", "stain", "chip"]
    assert manifest["ignore_index"] == 255
    assert manifest["input"]["shape"] == ["batch", 3, 32, 32]
    assert max(manifest["parity"]["onnxruntime_max_abs_diff"].values()) <= 1e-4


def test_checkpoint_records_task_classes_and_best_metric(seg_run):
    _, run = seg_run
    ckpt = torch.load(run / "checkpoints" / "best.pth", map_location="cpu", weights_only=True)
    assert ckpt["task"] == "segmentation" and ckpt["best"]["metric"] == "mIoU"
    assert ckpt["classes"] == ["background", "stain", "chip"]


@pytest.mark.slow
def test_quickstart_reaches_target(tmp_path):
    """The documented quickstart: mIoU >= 0.85 on the demo data (a few minutes on 2 cores)."""
    from aicore.tasks.segmentation.synthetic import make
    make(tmp_path / "data" / "demo" / "segmentation")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    t0 = time.perf_counter()
    assert run_cli("-c", "configs/segmentation/quickstart.json", "-o", "work_dir=run",
                   "-o", "train.progress=false", cwd=tmp_path) == 0
    elapsed = time.perf_counter() - t0
    best = max(json.loads(line)["mIoU"]
               for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    print(f"quickstart: best mIoU {best:.4f} in {elapsed:.0f}s")
    assert best >= 0.85
