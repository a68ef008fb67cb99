"""Classification power features: mixup/cutmix, distillation, R-Drop, class balancing,
backbone freezing, auto batch size, TTA, eval analysis, CAMs, conv-bn fusion, benchmarks."""
import csv
import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from aicore.data.loaders import WeightedDistributedSampler
from tests.conftest import cls_config, run_cli, write_config


def _run(tmp_path, cls_root, name, *overrides, model=None, **train):
    cfg = cls_config(cls_root, tmp_path / name, epochs=1, **train)
    if model:
        cfg["model"].update(model)
    path = write_config(tmp_path / f"{name}.json", cfg)
    code = run_cli("-c", str(path), *overrides)
    return code, tmp_path / name, path


def _history(run):
    return torch.load(run / "checkpoints" / "last.pth", weights_only=True)["history"]


def test_mixup_sampler_and_train_batch_image(tmp_path, cls_root, capsys):
    code, run, _ = _run(tmp_path, cls_root, "mix", "-o", "data.batch_size=-1",
                        mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0}, class_balance="sampler")
    assert code == 0
    assert (run / "train_batch.jpg").stat().st_size > 2000
    assert _history(run)[0]["train_loss"] > 0
    assert "data.batch_size = -1 on CPU: using 32" in capsys.readouterr().err


def test_weighted_sampler_balances_and_shards():
    labels = [0] * 90 + [1] * 10
    weights = [1 / 90 if t == 0 else 1 / 10 for t in labels]
    s0 = WeightedDistributedSampler(weights, num_replicas=2, rank=0, seed=3)
    s1 = WeightedDistributedSampler(weights, num_replicas=2, rank=1, seed=3)
    draws = []
    for epoch in range(20):
        s0.set_epoch(epoch)
        s1.set_epoch(epoch)
        a, b = list(s0), list(s1)
        assert len(a) == len(b) == 50
        draws += a + b
    minority = np.mean([labels[i] for i in draws])
    assert 0.4 < minority < 0.6  # drawn about equally, not 10 %
    s0.set_epoch(0)
    first = list(s0)
    s0.set_epoch(0)
    assert list(s0) == first  # a function of (seed, epoch)


def test_freeze_backbone_keeps_backbone_and_bn_stats(tmp_path, cls_root, trained_run):
    _, teacher_run = trained_run
    init = teacher_run / "checkpoints" / "last.pth"
    code, run, _ = _run(tmp_path, cls_root, "frozen", "-o", f"model.init_from={init}",
                        freeze_backbone_epochs=5)
    assert code == 0
    ckpt = torch.load(init, weights_only=True)
    before = ckpt[ckpt["best"]["weights"]]  # init_from takes the weights that scored best
    after = torch.load(run / "checkpoints" / "last.pth", weights_only=True)["model"]
    for k, v in after.items():
        if k.startswith("fc."):
            assert not torch.equal(v, before[k]), k  # the head trained
        elif v.dtype.is_floating_point:
            assert torch.equal(v, before[k]), k  # backbone weights and BN statistics fixed


@pytest.mark.parametrize("feature", [None, "AT", "SP"])
def test_distillation_from_teacher_checkpoint(tmp_path, cls_root, trained_run, feature):
    _, teacher_run = trained_run
    distill = {"checkpoint": str(teacher_run / "checkpoints" / "best.pth"), "alpha": 0.5,
               "temperature": 2.0, "feature": feature}
    code, run, _ = _run(tmp_path, cls_root, f"kd_{feature}", model={"name": "resnet14t"},
                        distill=distill)
    assert code == 0
    h = _history(run)[0]
    assert h["train_kd"] >= 0 and ("train_feat" in h) == (feature is not None)


def test_distillation_bad_input(tmp_path, cls_root, capsys):
    code, _, _ = _run(tmp_path, cls_root, "kd_bad", distill={"checkpoint": str(tmp_path / "x.pth")})
    assert code == 2 and "x.pth" in capsys.readouterr().err
    code, _, _ = _run(tmp_path, cls_root, "kd_bad2", distill={"checkpint": "a"})
    assert code == 2 and "checkpint" in capsys.readouterr().err


def test_rdrop(tmp_path, cls_root, capsys):
    code, run, _ = _run(tmp_path, cls_root, "rdrop", model={"drop_rate": 0.3}, rdrop={"alpha": 1.0})
    assert code == 0 and _history(run)[0]["train_rdrop"] > 0
    code, _, _ = _run(tmp_path, cls_root, "rdrop_nodrop", rdrop={"alpha": 1.0})
    assert code == 2 and "no dropout" in capsys.readouterr().err


def test_tta_views():
    from aicore.tasks.classification.protocol import tta_logits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = torch.softmax(model(x), 1)
        flip = torch.softmax(tta_logits(model, x, "hflip"), 1)
        expected = (plain + torch.softmax(model(x.flip(-1)), 1)) / 2
        torch.testing.assert_close(flip, expected)
        ten = torch.softmax(tta_logits(model, x, "tencrop"), 1)
    assert ten.shape == (2, 3) and torch.allclose(ten.sum(1), torch.ones(2))


def test_eval_analysis_tta_cam_fusion_benchmark(trained_run, tmp_path):
    cfg, run = trained_run
    out = tmp_path / "ev"
    assert run_cli("-c", str(cfg), "-o", "mode=eval", "-o", "eval.tta=hflip",
                   "-o", f"eval.out={out}") == 0
    m = json.loads((out / "metrics.json").read_text())
    for name, pc in m["per_class"].items():
        assert set(pc) >= {"precision", "recall", "f0.5", "f1", "f2", "auc", "aupr", "support"}
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    wrong = list(csv.DictReader(open(out / "wrong.csv")))
    correct = list(csv.DictReader(open(out / "correct.csv")))
    assert len(wrong) + len(correct) == len(rows) == 24
    assert all(r["correct"] == "0" for r in wrong)
    assert (out / "tsne.png").stat().st_size > 5000
    assert "| class |" in (out / "per_class.md").read_text()

    demo = tmp_path / "demo"
    src = json.loads(cfg.read_text())["data"]["root"] + "/val/circle"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={src}",
                   "-o", "demo.cam=GradCAM", "-o", f"demo.out={demo}", "-o", "demo.max_images=2") == 0
    assert len(list(demo.glob("*.png"))) == 2

    exp = tmp_path / "exp"
    assert run_cli("-c", str(cfg), "-o", "mode=export", "-o", "export.benchmark=true",
                   "-o", "export.benchmark_iters=3", "-o", f"export.out={exp}") == 0
    man = json.loads((exp / "manifest.json").read_text())
    assert max(man["parity"]["prepared_pytorch_max_abs_diff"].values()) < 1e-4
    bench = man["parity"]["benchmark"]
    assert set(bench) == {"pytorch", "torchscript", "onnxruntime"}
    assert bench["onnxruntime"][0]["images_per_s"] > 0


def test_conv_bn_fusion_matches():
    import timm
    from aicore.engine.fuse import count_batchnorm, fuse_conv_bn
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=3).eval()
    for m in model.modules():  # non-trivial statistics, so folding is actually exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = fuse_conv_bn(model)
    assert count_batchnorm(fused) == 0 and count_batchnorm(model) > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_per_class_fbeta_auc_match_sklearn():
    from aicore.tasks.classification.evaluator import ClassificationEvaluator
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)).astype(np.float32)
    logits[np.arange(300), y] += 1.0
    ev = ClassificationEvaluator(num_classes=3, class_names=["a", "b", "c"])
    ev.update(torch.from_numpy(logits), torch.from_numpy(y))
    m = ev.compute()
    pred = logits.argmax(1)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    for beta, key in ((0.5, "f0.5"), (2.0, "f2")):
        ref = skm.fbeta_score(y, pred, beta=beta, average=None)
        assert [m["per_class"][c][key] for c in "abc"] == pytest.approx(list(ref))
    for i, c in enumerate("abc"):
        assert m["per_class"][c]["auc"] == pytest.approx(skm.roc_auc_score(y == i, probs[:, i]))
        assert m["per_class"][c]["aupr"] == pytest.approx(
            skm.average_precision_score(y == i, probs[:, i]))


def test_fp16_export(trained_run, tmp_path):
    """export.half: FP16 ONNX and TorchScript, checked against the float32 model."""
    import onnxruntime as ort
    cfg, _ = trained_run
    exp = tmp_path / "fp16"
    assert run_cli("-c", str(cfg), "-o", "mode=export", "-o", "export.half=true",
                   "-o", f"export.out={exp}") == 0
    man = json.loads((exp / "manifest.json").read_text())
    assert man["input"]["dtype"] == "float16" and man["parity"]["dtype"] == "float16"
    assert 0 < max(man["parity"]["onnxruntime_max_abs_diff"].values()) <= 0.01
    sess = ort.InferenceSession(str(exp / "model.onnx"))
    assert sess.get_inputs()[0].type == "tensor(float16)"
    out = sess.run(None, {"images": np.zeros((2, 3, 32, 32), np.float16)})
    assert out[1].dtype == np.float16 and out[1].shape == (2, 4)
