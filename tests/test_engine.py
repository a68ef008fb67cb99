"""Trainer mechanics: exact resume, AMP, accumulation, clipping, NaN stop, fine-tuning,
optimizer groups, schedules, losses."""
import json

import pytest
import torch
from torch import nn

from aicore.errors import ConfigError
from aicore.registry import LOSSES
from tests.conftest import cls_config, run_cli, write_config


def _train(tmp_path, cls_root, name, *overrides, **train):
    cfg = write_config(tmp_path / f"{name}.json", cls_config(cls_root, tmp_path / name, **train))
    assert run_cli("-c", str(cfg), *overrides) == 0
    return tmp_path / name


def _weights(run, name="last.pth"):
    return torch.load(run / "checkpoints" / name, weights_only=True)


def test_resume_continues_exactly(tmp_path, cls_root):
    """N epochs in one go == k epochs, stop, resume, N-k more: identical weights and EMA.
    Uses a data-loader worker and random augmentation so their seeding is covered too."""
    opts = dict(ema={"decay": 0.9})
    workers = ["-o", "data.num_workers=1"]
    full = _train(tmp_path, cls_root, "full", *workers, "-o", "train.epochs=3", **opts)
    part = _train(tmp_path, cls_root, "part", *workers, "-o", "train.epochs=1", **opts)
    cfg = tmp_path / "part.json"
    assert run_cli("-c", str(cfg), *workers, "-o", "train.epochs=3", "-o", "train.resume=true") == 0
    a, b = _weights(full), _weights(part)
    assert a["epoch"] == b["epoch"] == 3 and a["iter"] == b["iter"]
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for ga, gb in zip(a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]):
        assert ga["lr"] == gb["lr"]
    assert a["best"] == b["best"]
    lines_full = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
    lines_part = [json.loads(l) for l in (part / "metrics.jsonl").read_text().splitlines()]
    assert lines_full == lines_part
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]


def test_val_weights_ema_scores_only_the_ema_weights(tmp_path, cls_root, capsys):
    """train.val_weights = "ema": one validation pass per epoch, on the EMA weights; best.pth,
    results.csv and eval's weights=auto follow them. Without EMA the key is refused."""
    run = _train(tmp_path, cls_root, "emaonly", "-o", "train.epochs=2", "-o",
                 "train.val_weights=ema", ema={"decay": 0.9})
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["weights"]) for r in rows] == [(1, "ema"), (2, "ema")]
    best = _weights(run, "best.pth")
    assert best["best"]["weights"] == "ema"
    assert all("ema_top1" in h and "top1" not in h for h in best["history"])
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert "ema_top1" in header and "top1" not in header
    capsys.readouterr()
    cfg = write_config(tmp_path / "noema.json", cls_config(cls_root, tmp_path / "noema"))
    assert run_cli("-c", str(cfg), "-o", "train.val_weights=ema") == 2
    err = capsys.readouterr().err
    assert "train.val_weights" in err and "train.ema" in err
    assert not (tmp_path / "noema" / "checkpoints").exists()


def test_bf16_autocast_accumulation_and_clipping(tmp_path, cls_root):
    run = _train(tmp_path, cls_root, "amp", "-o", "train.epochs=1", amp="bf16", accumulate=4,
                 clip_grad=1.0)
    ck = _weights(run)
    # 48 images / batch 8 = 6 iterations; a step every 4, plus one for the epoch's remainder
    assert ck["iter"] == 2
    assert all(v.dtype != torch.bfloat16 for v in ck["model"].values())  # master weights fp32


def test_nan_loss_stops_without_saving(tmp_path, cls_root, capsys):
    @LOSSES.register("ExplodesAfterTwoCalls")
    class Explodes(nn.Module):
        calls = 0

        def forward(self, logits, target):
            type(self).calls += 1
            loss = nn.functional.cross_entropy(logits, target)
            return loss * float("nan") if type(self).calls > 8 else loss

    cfg = cls_config(cls_root, tmp_path / "nan")
    cfg["loss"] = {"type": "ExplodesAfterTwoCalls"}
    path = write_config(tmp_path / "nan.json", cfg)
    code = run_cli("-c", str(path))
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err and "epoch 2" in err and "lr" in err
    # epoch 1 (6 iterations) was saved; the diverged epoch 2 never overwrote it
    assert _weights(tmp_path / "nan")["epoch"] == 1
    for v in _weights(tmp_path / "nan")["model"].values():
        assert torch.isfinite(v.float()).all()


def test_init_from_reports_skipped_keys(tmp_path, cls_root, trained_run, capsys):
    _, run = trained_run
    cfg = cls_config(cls_root, tmp_path / "ft")
    cfg["model"]["init_from"] = str(run / "checkpoints" / "last.pth")
    cfg["model"]["name"] = "resnet10t"
    cfg["data"]["in_channels"] = 1  # first conv changes shape -> skipped and reported
    path = write_config(tmp_path / "ft.json", cfg)
    assert run_cli("-c", str(path)) == 0
    err = capsys.readouterr().err
    assert "skipped (shape differs) conv1.0.weight" in err
    assert "loaded" in err


def test_optimizer_groups_skip_decay_on_bias_and_norm():
    from aicore.optim.optimizers import sgd
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    opt = sgd(model, lr=0.1, weight_decay=1e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4, 2}
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4


@pytest.mark.parametrize("name,kwargs", [
    ("cosine", {"warmup_epochs": 1}), ("multistep", {"milestones": [2, 3], "warmup_epochs": 1}),
    ("step", {"step_epochs": 1}), ("poly", {"warmup_epochs": 1}),
])
def test_schedules_warm_up_per_iteration(name, kwargs):
    import aicore.optim.schedulers  # noqa: F401  (registers the schedules)
    from aicore.registry import SCHEDULERS
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = SCHEDULERS.get(name)(opt, epochs=4, iters_per_epoch=10, **kwargs)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if kwargs.get("warmup_epochs"):
        assert lrs[0] < 0.05 and lrs[0] < lrs[5] < lrs[10]  # linear ramp over 10 iterations
    if name == "cosine":
        assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.05
    if name == "multistep":
        assert lrs[15] == pytest.approx(1.0) and lrs[25] == pytest.approx(0.1)
        assert lrs[35] == pytest.approx(0.01)
    if name == "step":
        assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.1)


def test_losses():
    import aicore.losses.classification as L
    torch.manual_seed(0)
    logits, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    ce = nn.functional.cross_entropy(logits, y)
    assert L.FocalLoss(gamma=0.0)(logits, y) == pytest.approx(ce.item(), rel=1e-5)
    assert L.PolyLoss(epsilon=0.0)(logits, y) == pytest.approx(ce.item(), rel=1e-5)
    assert L.FocalLoss(gamma=2.0)(logits, y) < ce
    smooth = L.CrossEntropyLoss(label_smoothing=0.1)(logits, y)
    assert smooth == pytest.approx(nn.functional.cross_entropy(logits, y, label_smoothing=0.1).item())
    w = L.class_weights("balanced", [90, 10], 2)
    assert w[1] / w[0] == pytest.approx(9.0) and w.mean() == pytest.approx(1.0)
    e = L.class_weights("effective", [90, 10], 2, beta=0.99)
    assert 1 < e[1] / e[0] < 9
    with pytest.raises(ConfigError):
        L.class_weights([1.0, 2.0, 3.0], None, 2)
    weighted = L.CrossEntropyLoss(class_weights="balanced", class_counts=[5, 5, 10], num_classes=3)
    assert weighted.weight.tolist() == pytest.approx([1.2, 1.2, 0.6])
