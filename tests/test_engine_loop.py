"""The training loop itself, without any task code: a BaseTrainer subclass on an in-memory
regression set and a two-layer model. Hook order and the per-epoch record, the stage order
check, early stopping, gradient accumulation against the schedule (lr of every optimizer
step), exact resume, the validation loss and results.csv / results.png."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
from dotmap import DotMap
from torch import nn
from torch.utils.data import Dataset

from aicore import config as C
from aicore.engine.hooks import Hook
from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError
from aicore.registry import HOOKS, SCHEDULERS
from aicore.tasks import import_tasks

import_tasks([])  # optimizers, schedulers and the engine's hooks; no task package


class Points(Dataset):
    """y = x . w + noise, fixed by the seed; (x, y, index) like the task datasets."""

    classes = ["y"]

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


class NegMSE:
    """Evaluator: the negative mean squared error over the split (higher is better)."""

    metric_names = ("neg_mse",)

    def reset(self) -> None:
        self.sq, self.n = 0.0, 0

    def update(self, outputs, targets) -> None:
        self.sq += float(((outputs - targets) ** 2).sum())
        self.n += len(targets)

    def compute(self) -> dict:
        return {"neg_mse": -self.sq / max(1, self.n)}


class ToyTrainer(BaseTrainer):
    task = "toy"
    default_metric = "neg_mse"

    def build_dataset(self, split: str, train: bool, **overrides):
        return Points(10 if train else 6, seed=1 if train else 2)

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))

    def build_loss(self) -> nn.Module:
        return nn.MSELoss()

    def build_evaluator(self):
        return NegMSE()

    def forward_loss(self, batch):
        x, y, _ = batch
        return {"loss": self.loss_fn(self.model(x).squeeze(1), y)}

    @torch.no_grad()
    def predict_batch(self, model, batch):
        x, y, _ = batch
        return model(x).squeeze(1), y

    @torch.no_grad()
    def predict_and_loss(self, model, batch):
        out, y = self.predict_batch(model, batch)
        return out, y, {"loss": self.loss_fn(out, y)}


def toy_config(work_dir, lr: float = 0.05, **train) -> DotMap:
    cfg = copy.deepcopy(C.DEFAULTS)
    cfg.update(task="toy", work_dir=str(work_dir), seed=3)
    cfg["data"].update(batch_size=2, num_workers=0)
    cfg["model"] = {"type": "two-layer MLP (ToyTrainer.build_model)"}
    cfg["optimizer"] = {"type": "SGD", "lr": lr, "momentum": 0.9}
    cfg["scheduler"] = {"type": "cosine", "warmup_epochs": 1}
    cfg["train"].update({"epochs": 4, "device": "cpu", "progress": False, **train})
    return DotMap(cfg, _dynamic=False)


def train(work_dir, **train) -> ToyTrainer:
    trainer = ToyTrainer(toy_config(work_dir, **train))
    trainer.train()
    return trainer


SPY_LOG: list = []
LIFECYCLE = ("before_train", "before_epoch", "before_iter", "after_iter", "after_epoch",
             "after_train", "close")


@HOOKS.register("LoopTestSpy")
class Spy(Hook):
    """Notes every call it gets, with what the record and the history held at that moment."""

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name not in LIFECYCLE:
            return attr

        def call(trainer):
            SPY_LOG.append((self.priority, name, trainer.record.evaluated, len(trainer.history)))
            return attr(trainer)
        return call


@HOOKS.register("LoopTestStopAfter2")
class StopAfter2(Hook):
    """Interrupts the run after epoch 2, like a killed job, with the config unchanged."""

    priority = 60

    def after_epoch(self, trainer) -> None:
        trainer.stop_requested = trainer.record.epoch >= 2


def test_hook_order_and_record(tmp_path):
    """Spies at priorities around each stage see: evaluation done only after EvalHook (40),
    the epoch in the history only after CheckpointHook (50); the lifecycle calls come in
    order, the iterations 5 per epoch."""
    SPY_LOG.clear()
    spies = [{"type": "LoopTestSpy", "priority": p} for p in (39, 41, 51)]
    trainer = train(tmp_path / "run", epochs=2, hooks=spies)
    log = list(SPY_LOG)
    names = [type(h).__name__ for h in trainer.hooks]
    assert names[:4] == ["LRSchedulerHook", "EMAHook", "Spy", "EvalHook"]
    assert names[4:7] == ["Spy", "CheckpointHook", "Spy"]
    epoch_calls = [(p, ev, hist) for p, name, ev, hist in log if name == "after_epoch"]
    # epoch 1: the spy before EvalHook sees no evaluation, the one after sees it, and only
    # the spy after CheckpointHook sees the epoch in the history; epoch 2 likewise
    assert epoch_calls == [(39, False, 0), (41, True, 0), (51, True, 1),
                           (39, False, 1), (41, True, 1), (51, True, 2)]
    calls = [name for p, name, _, _ in log if p == 39]
    per_epoch = ["before_epoch"] + ["before_iter", "after_iter"] * 5 + ["after_epoch"]
    assert calls == ["before_train"] + per_epoch * 2 + ["after_train", "close"]
    rec = trainer.record
    assert rec.epoch == 2 and rec.evaluated and set(rec.metrics) == {"model"}
    assert rec.best == trainer.best and rec.train_losses["loss"] > 0


def test_stage_order_is_checked_before_anything_is_written(tmp_path):
    work = tmp_path / "run"
    cfg = toy_config(work, hooks=[{"type": "EarlyStoppingHook", "patience": 2, "priority": 60}])
    with pytest.raises(ConfigError) as e:
        ToyTrainer(cfg).train()
    msg = str(e.value)
    assert msg.startswith("train.hooks.0: EarlyStoppingHook (stage decide, priority 60) "
                          "must run before CheckpointHook (stage save, priority 50)"), msg
    assert "a priority below 50" in msg
    assert not work.exists()


def test_early_stopping_after_patience(tmp_path):
    """lr 0: the metric never improves after epoch 1, so patience 2 stops after epoch 3, and
    the checkpoint of epoch 3 already holds the stop (the decision comes before the save)."""
    flat = train(tmp_path / "flat", lr=0.0, epochs=10,
                 hooks=[{"type": "EarlyStoppingHook", "patience": 2}])
    assert flat.record.epoch == 3 and flat.record.stop
    assert "no improvement in neg_mse for 2 evaluations" in flat.record.stop_reason
    ck = torch.load(tmp_path / "flat" / "checkpoints" / "last.pth", weights_only=True)
    assert ck["epoch"] == 3 and ck["hooks"]["EarlyStoppingHook"] == {"bad": 2}
    assert ck["best"]["epoch"] == 1 and [h["epoch"] for h in ck["history"]] == [1, 2, 3]
    log = (tmp_path / "flat" / "train.log").read_text()
    assert "training stopped early by a hook after epoch 3 (early stopping" in log


def test_accumulation_steps_and_lr_per_step(tmp_path):
    """5 iterations per epoch, accumulate 2: optimizer steps after iterations 2, 4 and 5
    (the epoch's last always steps), so 3 steps per epoch; the schedule counts those steps
    and every one's lr is recorded."""
    trainer = train(tmp_path / "run", epochs=2, accumulate=2)
    assert trainer.global_step == 6 and trainer.scheduler.last_epoch == 6
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    ref = SCHEDULERS.get("cosine")(ref_opt, epochs=2, iters_per_epoch=3, warmup_epochs=1)
    expected = []
    for _ in range(6):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    steps = [h["lr_steps"] for h in trainer.history]
    assert [len(s) for s in steps] == [3, 3]
    assert steps[0] + steps[1] == pytest.approx(expected, rel=1e-12)
    assert steps[0][0] < steps[0][1] < steps[0][2]  # the warm-up is visible step by step
    assert trainer.history[-1]["lr"] == pytest.approx(trainer.optimizer.param_groups[0]["lr"])


def test_resume_is_exact(tmp_path):
    """4 epochs straight == 2 epochs, interruption, resume to 4: same parameters, optimizer
    state, history (including every step's lr) and metrics.jsonl."""
    straight = train(tmp_path / "a", ema={"decay": 0.9})
    part = train(tmp_path / "b", ema={"decay": 0.9}, hooks=[{"type": "LoopTestStopAfter2"}])
    assert part.record.epoch == 2
    resumed = train(tmp_path / "b", ema={"decay": 0.9}, resume=True)
    assert resumed.global_step == straight.global_step == 20
    for (k, a), (_, b) in zip(straight.bare_model.state_dict().items(),
                              resumed.bare_model.state_dict().items()):
        assert torch.equal(a, b), k
    for a, b in zip(straight.ema.module.state_dict().values(),
                    resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
    assert straight.history == resumed.history and len(resumed.history) == 4
    lines = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("a", "b")]
    assert lines[0] == lines[1] and len(lines[0]) == 8  # 4 epochs x (model, ema)
    rows = list(csv.DictReader(open(tmp_path / "b" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]


def test_val_loss_results_csv_and_plot(tmp_path):
    trainer = train(tmp_path / "run", epochs=3, eval_interval=2)
    work = tmp_path / "run"
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [2, 3]  # every 2nd epoch, and the last
    # the validation loss is the mean per sample of the loss on the val split
    x, y = Points(6, seed=2).x, Points(6, seed=2).y
    model = trainer.bare_model.eval()
    with torch.no_grad():
        mse = float(((model(x).squeeze(1) - y) ** 2).mean())
    assert records[-1]["val_loss"] == pytest.approx(mse, rel=1e-5)
    rows = list(csv.DictReader(open(work / "results.csv")))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "val_loss", "neg_mse"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_loss"] == "" and float(rows[2]["val_loss"]) == pytest.approx(mse, 1e-5)
    assert (work / "results.png").stat().st_size > 10_000
    from aicore.engine.plots import results_figure, results_panels
    panels = dict(results_panels(trainer.history, ["neg_mse"]))
    assert list(panels) == ["train loss", "val loss", "neg_mse", "lr (every optimizer step)"]
    lr_x, _ = panels["lr (every optimizer step)"]["lr"]
    assert len(lr_x) == 15 and lr_x[-1] == 3.0 and lr_x[0] == pytest.approx(0.2)
    fig = results_figure(trainer.history, ["neg_mse"])
    for ax in fig.axes:
        if ax.get_visible():
            assert all(float(t).is_integer() for t in ax.get_xticks())
    assert math.isfinite(trainer.history[-1]["val_loss"])
