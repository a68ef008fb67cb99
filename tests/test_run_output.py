"""What a user sees of a run: plain periodic iteration lines with speed and ETA when stderr is
not a terminal (no progress-bar frames in train.log), about five of them per epoch by default,
what was said before work_dir existed at the top of train.log, results.csv / results.png,
the validation loss, and train.save_interval / train.keep_last epoch checkpoints."""
from __future__ import annotations

import csv
import json
import re

import pytest

from tests.conftest import cls_config, run_cli, write_config


def test_log_lines_and_epoch_checkpoints(cls_root, tmp_path, capsys):
    work = tmp_path / "run"
    cfg = cls_config(cls_root, work, progress=True, save_interval=1, keep_last=2)
    cfg["train"]["epochs"] = 3  # 48 images / batch 8 = 6 iterations
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    err = capsys.readouterr().err
    log = (work / "train.log").read_text(encoding="utf-8")
    lines = [ln for ln in log.splitlines() if " iter " in ln]
    # default log_interval (null): about 5 lines per epoch, here every 2nd of 6 iterations
    found = [re.search(r"epoch (\d)/3 iter (\d)/6", ln).groups() for ln in lines]
    assert found == [(e, i) for e in "123" for i in "246"], found
    assert all(re.search(r"\(\d+ img/s, ETA \d+:\d\d:\d\d\)$", ln) for ln in lines), lines
    assert lines[-1].endswith("ETA 0:00:00)")
    # the epoch line: whole epoch, then the training iterations' own time and speed
    done = [re.search(r"epoch (\d)/3 done in ([\d.]+)s \(training ([\d.]+)s, (\d+) img/s\)",
                      ln) for ln in log.splitlines() if " done in " in ln]
    assert len(done) == 3 and all(done), log
    for m in done:
        total, train_s, speed = float(m[2]), float(m[3]), int(m[4])
        assert train_s <= total + 0.05 and speed > 0
    # stderr is not a terminal here: no tqdm bar anywhere
    assert "\r" not in err and "it/s" not in err and "\r" not in log
    names = sorted(p.name for p in (work / "checkpoints").glob("epoch_*.pth"))
    assert names == ["epoch_0002.pth", "epoch_0003.pth"]  # keep_last 2 removed epoch 1
    # a kept epoch checkpoint resumes like last.pth
    import torch
    assert torch.load(work / "checkpoints" / "epoch_0002.pth", weights_only=False)["epoch"] == 2


def test_early_lines_in_train_log_results_and_val_loss(cls_root, tmp_path, trained_run):
    """init_from's report and the batch size picked for -1 are logged before work_dir is
    made (a bad input must damage nothing) and still reach train.log, at its top."""
    _, previous = trained_run
    work = tmp_path / "run"
    cfg = cls_config(cls_root, work, epochs=2)
    cfg["model"]["init_from"] = str(previous / "checkpoints" / "best.pth")
    cfg["data"]["batch_size"] = -1
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    log = (work / "train.log").read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(log) if " task=classification " in ln)
    early = "\n".join(log[:start])
    assert "init_from" in early and "batch_size = -1" in early, log[:start + 1]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| INFO ", ln) for ln in log[:start])
    records = [json.loads(ln) for ln in (work / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_loss"] > 0 for r in records)
    assert "top5" not in records[0]  # 4 classes: top-5 would always be 1
    rows = list(csv.DictReader(open(work / "results.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:4] == ["epoch", "lr", "train_loss", "val_loss"]
    assert "top1" in rows[0] and "top5" not in rows[0]
    assert float(rows[1]["val_loss"]) == pytest.approx(records[-1]["val_loss"], rel=1e-5)
    assert (work / "results.png").stat().st_size > 10_000
    for old in ("loss_curve.png", "metric_curve.png", "lr_curve.png"):
        assert not (work / old).exists()


def test_bad_keep_last_is_one_error_line(cls_root, tmp_path, capsys):
    cfg = cls_config(cls_root, tmp_path / "run", save_interval=1, keep_last=0)
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "train.keep_last" in err[-1] and " 0 " in err[-1]
    assert not (tmp_path / "run").exists()


def test_epoch_images_counts_a_partial_last_batch_once():
    """The epoch line's img/s divides the images trained on, not iterations x batch size."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from aicore.engine.hooks import epoch_images
    loader = DataLoader(list(range(50)), batch_size=8)  # 7 batches, the last of 2 images
    assert epoch_images(SimpleNamespace(train_loader=loader, epoch_count=7)) == 50
    assert epoch_images(SimpleNamespace(train_loader=loader, epoch_count=3)) == 24
    dropped = DataLoader(list(range(50)), batch_size=8, drop_last=True)
    assert epoch_images(SimpleNamespace(train_loader=dropped, epoch_count=6)) == 48
