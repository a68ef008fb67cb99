"""Faults users hit: folders that cannot be written, a full disk, two runs in one work_dir,
interrupted runs, a corrupt image late in a demo, file names that are not UTF-8, resuming a
finished or changed run, a model whose outputs turn NaN. Each ends with one `error:` line and
exit status 2 (or succeeds), and leaves what an earlier run wrote as it was."""
import errno
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from aicore.engine.hooks import Hook
from aicore.registry import HOOKS, MODELS
from tests.conftest import ROOT, cls_config, run_cli, snapshot, write_config


@HOOKS.register("FaultTestStopAfter")
class StopAfter(Hook):
    """Ends training cleanly after `epoch` epochs (a run stopped and resumed later)."""
    priority = 60

    def __init__(self, epoch: int = 1, priority=None) -> None:
        super().__init__(priority)
        self.epoch = epoch

    def after_epoch(self, trainer) -> None:
        if trainer.epoch + 1 == self.epoch:
            trainer.stop_requested = True


@HOOKS.register("FaultTestKillBeforeCheckpoint")
class KillBeforeCheckpoint(Hook):
    """Interrupts the run after evaluation and before the checkpoint of epoch `epoch`."""
    priority = 45

    def __init__(self, epoch: int = 1, priority=None) -> None:
        super().__init__(priority)
        self.epoch = epoch

    def after_epoch(self, trainer) -> None:
        if trainer.epoch + 1 == self.epoch:
            raise KeyboardInterrupt


@HOOKS.register("FaultTestEveryEpochBest")
class EveryEpochBest(Hook):
    """Marks every epoch as the best (a metric that keeps improving), so best.pth is due."""
    priority = 46

    def after_epoch(self, trainer) -> None:
        trainer.is_best = True
        trainer.best = dict(trainer.best, epoch=trainer.epoch + 1)


@MODELS.register("FaultTestNaNInEval")
class NaNInEval(nn.Module):
    """Finite outputs (and loss) while training, NaN outputs when evaluated."""

    def __init__(self, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, x):
        out = self.net(x)
        return out if self.training else out * float("nan")


def _exit2(capsys, *args):
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err
    return line


def _copy_run(trained_run, tmp_path):
    cfg, run = trained_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    return cfg, work


def _cfg(tmp_path, cls_root, work, name="c.json", **train):
    return write_config(tmp_path / name, cls_config(cls_root, work, **train))


# ------------------------------------------------------------------------------------------
# folders that cannot be written


def test_work_dir_under_a_file_is_refused(capsys, tmp_path, cls_root):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = _cfg(tmp_path, cls_root, blocker / "run")
    line = _exit2(capsys, "-c", str(cfg))
    assert "work_dir" in line and "not a folder" in line
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("work_dir", ["/sys/aicore_run", "/sys/kernel"])
def test_folder_the_kernel_refuses_is_refused(capsys, tmp_path, cls_root, work_dir):
    # sysfs refuses new folders and files even to root (EPERM/EACCES, or EROFS where it is
    # mounted read-only, as in Docker): the first a folder that cannot be made, the second an
    # existing folder that cannot be written into
    cfg = _cfg(tmp_path, cls_root, work_dir)
    line = _exit2(capsys, "-c", str(cfg))
    assert f"work_dir = {work_dir}: cannot write there" in line
    assert "choose a writable folder" in line


@pytest.mark.parametrize("section", ["eval", "demo", "export"])
def test_unwritable_output_folders(capsys, tmp_path, trained_run, cls_root, section):
    cfg, work = _copy_run(trained_run, tmp_path)
    before = snapshot(work)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _exit2(capsys, "-c", str(cfg), "-o", f"work_dir={work}", "-o", f"mode={section}",
                  "-o", f"{section}.out={blocker}/out",
                  "-o", f"demo.source={cls_root}/val")
    assert f"{section}.out" in line and "cannot write" in line
    assert snapshot(work) == before


def test_full_disk_keeps_last_and_best_in_agreement(capsys, tmp_path, trained_run, monkeypatch):
    from aicore.engine import checkpoint as ckpt_io
    cfg, work = _copy_run(trained_run, tmp_path)
    before = snapshot(work / "checkpoints")
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(f)
        return real_save(obj, f, *a, **k)

    def no_link(src, dst):  # a file system without hard links (FAT, some network shares)
        raise OSError(errno.EPERM, "Operation not permitted")

    def full(src, dst, *a, **k):  # last.pth's temp file is written, best.pth's copy hits a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(ckpt_io.os, "link", no_link)
    monkeypatch.setattr(ckpt_io.shutil, "copyfile", full)
    line = _exit2(capsys, "-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                  "-o", "train.epochs=3", "-o", 'train.hooks=[{"type": "FaultTestEveryEpochBest"}]')
    assert "best.pth" in line and "disk is full" in line and "unchanged" in line
    assert len(calls) == 1  # the state is serialised once, for both names
    assert snapshot(work / "checkpoints") == before  # neither file replaced, no temp left
    last = torch.load(work / "checkpoints" / "last.pth", weights_only=True)
    best = torch.load(work / "checkpoints" / "best.pth", weights_only=True)
    assert last["epoch"] == 2 and last["best"] == best["best"]
    assert best["epoch"] == best["best"]["epoch"]


def test_last_and_best_of_one_epoch_are_written_once(tmp_path, monkeypatch):
    """An improving epoch serialises its state once and links it under both names; the next
    epoch's last.pth replaces only its own name (best.pth keeps the older epoch), and without
    hard links the second name is a copy."""
    from aicore.engine import checkpoint as ckpt_io
    state = {"epoch": 1, "w": torch.arange(10.0)}
    last, best = tmp_path / "last.pth", tmp_path / "best.pth"
    ckpt_io.save_all_atomic([(state, last), (state, best)])
    assert os.path.samefile(last, best)
    ckpt_io.save_all_atomic([({"epoch": 2, "w": torch.zeros(10)}, last)])
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert torch.load(best, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(ckpt_io.os, "link", no_link)
    ckpt_io.save_all_atomic([(state, last), (state, best)])
    assert not os.path.samefile(last, best)
    assert torch.equal(torch.load(best, weights_only=True)["w"], state["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]


def test_checkpoints_get_normal_permissions(tmp_path, trained_run):
    _, run = trained_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pth", "best.pth"):
        assert (run / "checkpoints" / name).stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------------------------
# one run per work_dir


def test_second_run_into_a_locked_work_dir_is_refused(capsys, tmp_path, trained_run):
    cfg, work = _copy_run(trained_run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from aicore.engine.workdir import WorkDirLock;"
         "WorkDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
         str(work)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(work)
        line = _exit2(capsys, "-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                      "-o", "train.epochs=3")
        assert f"in use by another training (pid {holder.pid}" in line
        assert snapshot(work) == before
    finally:
        holder.kill()  # killed: its lock file stays behind, stale
        holder.wait()
    assert (work / ".lock").exists()
    assert run_cli("-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                   "-o", "train.epochs=3") == 0
    assert f"removing a stale lock {work / '.lock'} (pid {holder.pid}" in capsys.readouterr().err
    assert not (work / ".lock").exists()


def test_lock_of_another_host_is_refused(capsys, tmp_path, trained_run):
    cfg, work = _copy_run(trained_run, tmp_path)
    (work / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    line = _exit2(capsys, "-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                  "-o", "train.epochs=3")
    assert "host elsewhere" in line and "delete" in line


# ------------------------------------------------------------------------------------------
# interrupted runs


def test_orphaned_temp_files_are_removed(tmp_path, trained_run):
    cfg, work = _copy_run(trained_run, tmp_path)
    orphan = work / "checkpoints" / ".last.pth.999999.deadbeef.tmp"
    orphan.write_bytes(b"half a checkpoint")
    assert run_cli("-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                   "-o", "train.epochs=3") == 0
    assert not orphan.exists()
    assert not list((work / "checkpoints").glob("*.tmp"))


def test_kill_between_eval_and_checkpoint_leaves_no_duplicate_metrics(tmp_path, trained_run):
    cfg, work = _copy_run(trained_run, tmp_path)
    args = ["-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
            "-o", "train.epochs=3"]
    assert run_cli(*args, "-o", 'train.hooks=[{"type": "FaultTestKillBeforeCheckpoint", '
                                '"epoch": 3}]') == 130
    records = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records].count(3) == 2  # model + ema of the lost epoch
    assert run_cli(*args) == 0
    records = [(r["epoch"], r["weights"])
               for r in map(json.loads, (work / "metrics.jsonl").read_text().splitlines())]
    assert records == [(e, w) for e in (1, 2, 3) for w in ("model", "ema")]


def test_text_file_is_replaced_whole_or_not_at_all(tmp_path):
    """write_text_atomic (the metrics.jsonl trim above, the app's eval/threshold.json): the new
    text replaces the file in one step with a new file's permissions; a write that fails (here
    text UTF-8 cannot encode) leaves the old file as it was and no temp file beside it."""
    from aicore.data.io import write_text_atomic
    path = tmp_path / "threshold.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, '{"ng_threshold": 0.5, "ng_class": "défaut"}')
    assert path.read_text(encoding="utf-8") == '{"ng_threshold": 0.5, "ng_class": "défaut"}'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "x" * 100_000 + "\ud800")
    assert path.read_text(encoding="utf-8") == '{"ng_threshold": 0.5, "ng_class": "défaut"}'
    assert [p.name for p in tmp_path.iterdir()] == ["threshold.json"]


def test_resume_of_a_finished_run_changes_nothing(capsys, tmp_path, trained_run):
    cfg, work = _copy_run(trained_run, tmp_path)
    before = snapshot(work)
    assert run_cli("-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true") == 0
    assert "nothing to do, no file was changed" in capsys.readouterr().err
    assert snapshot(work) == before


def test_resume_past_warmup_is_exact_and_changes_are_applied(capsys, tmp_path, cls_root):
    """A cosine schedule with 1 warm-up epoch over 4: stopped after 2 (past warm-up, where the
    lr depends on train.epochs) and resumed == uninterrupted. Then a resume with another
    optimizer.lr applies it, and one with another train.epochs rebuilds the schedule."""
    full = _cfg(tmp_path, cls_root, tmp_path / "full", "full.json", epochs=4)
    part = _cfg(tmp_path, cls_root, tmp_path / "part", "part.json", epochs=4)
    assert run_cli("-c", str(full)) == 0
    assert run_cli("-c", str(part), "-o",
                   'train.hooks=[{"type": "FaultTestStopAfter", "epoch": 2}]') == 0
    shutil.copytree(tmp_path / "part", tmp_path / "lr")
    assert run_cli("-c", str(part), "-o", "train.resume=true") == 0
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]]
    capsys.readouterr()

    assert run_cli("-c", str(part), "-o", f"work_dir={tmp_path / 'lr'}", "-o", "train.resume=true",
                   "-o", "optimizer.lr=0.1") == 0
    assert "optimizer.lr 0.05 -> 0.1: the new lr is applied" in capsys.readouterr().err
    c = torch.load(tmp_path / "lr" / "checkpoints" / "last.pth", weights_only=True)
    for h_full, h_new in zip(a["history"][2:], c["history"][2:]):
        assert h_new["lr"] == pytest.approx(2 * h_full["lr"])

    assert run_cli("-c", str(part), "-o", f"work_dir={tmp_path / 'lr'}", "-o", "train.resume=true",
                   "-o", "optimizer.lr=0.1", "-o", "train.epochs=5") == 0
    assert "train.epochs 4 -> 5: the schedule is rebuilt for 5 epochs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# demo and eval over awkward sources


def test_corrupt_image_late_in_demo_leaves_earlier_demo(capsys, tmp_path, trained_run, cls_root):
    cfg, work = _copy_run(trained_run, tmp_path)
    source = tmp_path / "src"
    shutil.copytree(cls_root / "test", source)
    demo = ["-c", str(cfg), "-o", f"work_dir={work}", "-o", "mode=demo",
            "-o", f"demo.source={source}"]
    assert run_cli(*demo) == 0
    before = snapshot(work / "demo")
    (source / "zzz_corrupt.png").write_bytes(b"not a png")
    line = _exit2(capsys, *demo)
    assert "zzz_corrupt.png" in line and "corrupt" in line
    assert snapshot(work / "demo") == before
    assert not (work / "demo.partial").exists()


def test_file_names_that_are_not_utf8(tmp_path, trained_run, cls_root):
    cfg, work = _copy_run(trained_run, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(cls_root, data)
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    for split in ("val", "test"):
        first = sorted((data / split).rglob("*.png"))[0]
        first.rename(first.with_name(odd))
    assert run_cli("-c", str(cfg), "-o", f"work_dir={work}", "-o", f"data.root={data}",
                   "-o", "mode=eval") == 0
    for f in (work / "eval").rglob("*"):
        if f.suffix in (".csv", ".json", ".md"):
            f.read_text(encoding="utf-8")  # still valid UTF-8
    assert run_cli("-c", str(cfg), "-o", f"work_dir={work}", "-o", "mode=demo",
                   "-o", f"demo.source={data / 'test'}") == 0
    csv_text = (work / "demo" / "predictions.csv").read_text(encoding="utf-8")
    assert "caf\\udce9.png" in csv_text
    assert any(os.fsencode(p.name) == b"caf\xe9.png" for p in (work / "demo").rglob("*.png"))


# ------------------------------------------------------------------------------------------
# divergence that the loss does not show


def test_nan_outputs_with_finite_loss_stop_cleanly(capsys, tmp_path, cls_root):
    cfg = cls_config(cls_root, tmp_path / "run")
    cfg["model"] = {"type": "FaultTestNaNInEval"}
    path = write_config(tmp_path / "nan.json", cfg)
    line = _exit2(capsys, "-c", str(path))
    assert "outputs on the validation data became non-finite" in line
    assert "after epoch 1" in line
    assert not (tmp_path / "run" / "checkpoints" / "last.pth").exists()
    assert not (tmp_path / "run" / ".lock").exists()
