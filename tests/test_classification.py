"""Classification end to end: metrics against scikit-learn, both dataset layouts, 1/3 channels,
and the eval / demo / export runners on a trained run."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from aicore.tasks.classification.evaluator import ClassificationEvaluator
from aicore.tasks.classification.synthetic import make
from tests.conftest import ROOT, run_cli, write_config


def test_evaluator_matches_scikit_learn():
    rng = np.random.default_rng(0)
    n, k = 500, 6
    logits = torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, k, n))
    logits[torch.arange(n)[:300], y[:300]] += 2.0  # make it better than chance
    ev = ClassificationEvaluator(num_classes=k, class_names=[f"c{i}" for i in range(k)])
    for chunk in range(0, n, 64):  # accumulated over batches, not averaged per batch
        ev.update(logits[chunk:chunk + 64], y[chunk:chunk + 64])
    m = ev.compute()
    pred = logits.argmax(1).numpy()
    yt = y.numpy()
    assert m["top1"] == pytest.approx(skm.accuracy_score(yt, pred))
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(yt, logits.numpy(), k=5))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(yt, pred), abs=1e-12)
    for avg, key in (("macro", "precision_macro"),):
        assert m[key] == pytest.approx(skm.precision_score(yt, pred, average=avg, zero_division=0))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(yt, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(yt, pred, average="macro"))
    f1 = skm.f1_score(yt, pred, average=None)
    for i in range(k):
        assert m["per_class"][f"c{i}"]["f1"] == pytest.approx(f1[i])
    np.testing.assert_array_equal(ev.cm, skm.confusion_matrix(yt, pred))


def test_kappa_perfect_and_chance():
    ev = ClassificationEvaluator(num_classes=3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ev.update(torch.nn.functional.one_hot(y, 3).float() * 5, y)
    assert ev.compute()["kappa"] == pytest.approx(1.0)


@pytest.mark.parametrize("n,has_top5", [(5, False), (6, True)])
def test_top5_only_with_more_than_5_classes(n, has_top5):
    """With 5 classes or fewer every sample is in its top 5: no metric, not even for
    train.best_metric."""
    ev = ClassificationEvaluator(num_classes=n)
    y = torch.arange(n).repeat(3)
    ev.update(torch.randn(len(y), n), y)
    assert ("top5" in ev.compute()) == has_top5 == ("top5" in ev.metric_names)


def test_list_layout_grayscale_and_16bit(tmp_path):
    from aicore.tasks.classification.datasets import ClassificationDataset
    root = make(tmp_path / "lst", layout="list", channels=1, n_train=3, n_val=2, n_test=1)
    # one 16-bit image: read as float in [0, 1], normalised like the 8-bit ones
    first = (root / "train.txt").read_text().split()[0]
    img8 = cv2.imread(str(root / first), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / first), img8.astype(np.uint16) * 257)
    ds = ClassificationDataset(str(root), "train", in_channels=1, input_size=[32, 32])
    assert ds.layout == "list" and ds.classes == ["circle", "square", "triangle", "cross"]
    x, label, idx = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and label == 0
    ref = ClassificationDataset(str(root), "train", in_channels=1, input_size=[32, 32])
    x8 = (torch.from_numpy(img8.astype(np.float32)) / 255 - 0.5) / 0.5
    torch.testing.assert_close(x[0], x8, atol=1e-5, rtol=0)
    # the same grayscale files can feed a 3-channel model
    ds3 = ClassificationDataset(str(root), "val", in_channels=3, input_size=[32, 32])
    assert ds3[0][0].shape == (3, 32, 32)
    assert ds.class_counts == [3, 3, 3, 3] and len(ref) == 12


def test_list_file_with_explicit_labels(tmp_path):
    from aicore.tasks.classification.datasets import ClassificationDataset
    root = make(tmp_path / "lst", layout="list", n_train=2, n_val=1, n_test=1)
    lines = [f"{p} {i % 4}" for i, p in enumerate((root / "val.txt").read_text().split())]
    (root / "val.txt").write_text("\n".join(lines))
    ds = ClassificationDataset(str(root), "val", input_size=[32, 32])
    assert [t for _, t in ds.samples] == [0, 1, 2, 3]


def test_train_eval_demo_export(trained_run, tmp_path):
    cfg, run = trained_run
    for name in ("config.json", "train.log", "metrics.jsonl", "checkpoints/last.pth",
                 "checkpoints/best.pth", "results.png", "results.csv"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["weights"] for r in records} == {"model", "ema"}  # EMA evaluated separately
    assert [r["epoch"] for r in records] == [1, 1, 2, 2]
    for key in ("top1", "precision_macro", "recall_macro", "f1_macro", "kappa", "val_loss",
                "per_class"):
        assert key in records[0]
    assert "top5" not in records[0]  # 4 classes: top-5 accuracy would always be 1
    ckpt = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    for key in ("model", "ema", "optimizer", "scheduler", "scaler", "epoch", "iter", "best",
                "rng", "config", "classes"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and ckpt["classes"] == ["circle", "cross", "square", "triangle"]
    # raw and EMA weights are stored separately
    k = next(k for k, v in ckpt["model"].items() if v.dtype.is_floating_point)
    assert not torch.equal(ckpt["model"][k], ckpt["ema"][k])

    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert 0 <= m["top1"] <= 1 and "per_class" in m and "kappa" in m
    assert (run / "eval" / "confusion_matrix.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(run / "eval" / "predictions.csv")))
    assert len(rows) == 24 and set(rows[0]) >= {"path", "true", "predicted", "probability"}
    assert sum(int(r["correct"]) for r in rows) / 24 == pytest.approx(m["top1"])

    src = Path(json.loads(cfg.read_text())["data"]["root"]) / "test"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={src}") == 0
    demo_rows = list(csv.DictReader(open(run / "demo" / "predictions.csv")))
    assert len(demo_rows) == 12 and len(list((run / "demo").rglob("*.png"))) == 12

    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0
    man = json.loads((run / "export" / "manifest.json").read_text())
    assert man["classes"] == ["circle", "cross", "square", "triangle"]
    assert man["input"]["shape"] == ["batch", 3, 32, 32] and man["opset"] == 17
    assert max(man["parity"]["onnxruntime_max_abs_diff"].values()) <= 1e-4
    import onnxruntime as ort
    sess = ort.InferenceSession(str(run / "export" / "model.onnx"))
    out = sess.run(None, {"images": np.zeros((3, 3, 32, 32), np.float32)})  # dynamic batch
    assert out[0].shape == (3, 4) and np.allclose(out[1].sum(1), 1, atol=1e-5)
    assert torch.jit.load(str(run / "export" / "model.torchscript"))(
        torch.zeros(2, 3, 32, 32))[0].shape == (2, 4)


def test_demo_on_video(trained_run, tmp_path):
    cfg, run = trained_run
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48))
    for i in range(4):
        frame = np.full((48, 48, 3), 60, np.uint8)
        cv2.circle(frame, (24, 24), 10 + i, (200, 220, 240), -1)
        w.write(frame)
    w.release()
    out = tmp_path / "demo_out"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={video}",
                   "-o", f"demo.out={out}") == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3]
    assert (out / "clip_pred.mp4").stat().st_size > 0


def test_custom_modules_config(cls_root, tmp_path):
    """The shipped example custom model and loss train through the CLI (1-channel input)."""
    cfg = json.loads((ROOT / "configs/classification/custom_example.json").read_text())
    cfg["_base_"] = str(ROOT / "configs/_base_/classification.json")
    cfg["data"].update({"root": str(cls_root), "num_workers": 0})
    cfg["train"] = {"epochs": 1, "progress": False}
    cfg["work_dir"] = str(tmp_path / "run")
    path = write_config(tmp_path / "custom.json", cfg)
    assert run_cli("-c", str(path), cwd=ROOT) == 0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.pth", weights_only=True)
    assert ckpt["config"]["model"]["type"] == "TinyConvNet"
    assert ckpt["model"]["features.0.weight"].shape[1] == 1  # in_chans from data.in_channels


@pytest.mark.slow
def test_quickstart_reaches_target(tmp_path):
    """README's main job: demo data + configs/classification/quickstart.json -> top1 >= 0.95."""
    from aicore.tools.demo_data import main as demo_data
    demo_data([str(tmp_path / "demo"), "--task", "classification"])
    work = tmp_path / "qs"
    assert run_cli("-c", str(ROOT / "configs/classification/quickstart.json"),
                   "-o", f"data.root={tmp_path / 'demo' / 'classification'}",
                   "-o", f"work_dir={work}", "-o", "train.progress=false") == 0
    records = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert max(r["top1"] for r in records) >= 0.95
    ckpt = torch.load(work / "checkpoints/best.pth", weights_only=True)
    assert ckpt["best"]["value"] >= 0.95


def test_pretrained_from_local_file(tmp_path):
    """`pretrained: <path>` loads local weights through timm, adapting head and channels."""
    import timm
    from aicore.tasks.classification.models import timm_classifier
    src = timm.create_model("resnet10t", num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = timm_classifier("resnet10t", num_classes=4, in_chans=1,
                            pretrained=str(tmp_path / "w.pth"))
    assert model.fc.out_features == 4
    w = src.conv1[0].weight.sum(dim=1, keepdim=True)  # timm folds RGB filters into one channel
    torch.testing.assert_close(model.conv1[0].weight, w)
    torch.testing.assert_close(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
