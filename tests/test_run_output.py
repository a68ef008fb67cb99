"""What a user sees of a run: plain periodic iteration lines with speed and ETA when stderr is
not a terminal (no progress-bar frames in train.log), and train.save_interval /
train.keep_last epoch checkpoints."""
from __future__ import annotations

import re

from tests.conftest import cls_config, run_cli, write_config


def test_log_lines_and_epoch_checkpoints(cls_root, tmp_path, capsys):
    work = tmp_path / "run"
    cfg = cls_config(cls_root, work, progress=True, save_interval=1, keep_last=2)
    cfg["train"]["epochs"] = 3  # 48 images / batch 8 = 6 iterations, below log_interval 20
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    err = capsys.readouterr().err
    log = (work / "train.log").read_text(encoding="utf-8")
    lines = [ln for ln in log.splitlines() if " iter " in ln]
    # one line per epoch at its last iteration, each with speed and ETA
    assert [re.search(r"epoch (\d)/3 iter 6/6", ln).group(1) for ln in lines] == ["1", "2", "3"]
    assert all(re.search(r"\(\d+ img/s, ETA \d+:\d\d:\d\d\)$", ln) for ln in lines), lines
    assert lines[-1].endswith("ETA 0:00:00)")
    # stderr is not a terminal here: no tqdm bar anywhere
    assert "\r" not in err and "it/s" not in err and "\r" not in log
    names = sorted(p.name for p in (work / "checkpoints").glob("epoch_*.pth"))
    assert names == ["epoch_0002.pth", "epoch_0003.pth"]  # keep_last 2 removed epoch 1
    # a kept epoch checkpoint resumes like last.pth
    import torch
    assert torch.load(work / "checkpoints" / "epoch_0002.pth", weights_only=False)["epoch"] == 2


def test_bad_keep_last_is_one_error_line(cls_root, tmp_path, capsys):
    cfg = cls_config(cls_root, tmp_path / "run", save_interval=1, keep_last=0)
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "train.keep_last" in err[-1] and " 0 " in err[-1]
    assert not (tmp_path / "run").exists()
