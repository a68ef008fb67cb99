"""Checkpoints written on the writer thread (aicore/engine/checkpoint_writer.py): the file
holds the state of the moment it was submitted, training goes on during the write, and a
failed write still stops the run with the checkpoint error and complete files."""
from __future__ import annotations

import errno
import threading

import pytest
import torch

from aicore.engine import checkpoint as ckpt_io
from aicore.engine.checkpoint_writer import CheckpointWriter
from aicore.engine.hooks import Hook
from aicore.errors import CheckpointError
from aicore.registry import HOOKS
from conftest import cls_config, run_cli, write_config


def test_the_file_holds_the_state_as_it_was_when_submitted(tmp_path):
    w = torch.arange(6.0)
    momentum = {"state": {0: {"momentum_buffer": torch.ones(3)}}}
    writer = CheckpointWriter()
    writer.submit({"model": {"w": w}, "optimizer": momentum, "epoch": 1},
                  [tmp_path / "last.pth", tmp_path / "best.pth"])
    w.add_(100)  # the next training step changes the tensors in place
    momentum["state"][0]["momentum_buffer"].mul_(0)
    writer.wait()
    for name in ("last.pth", "best.pth"):
        saved = torch.load(tmp_path / name, weights_only=True)
        assert torch.equal(saved["model"]["w"], torch.arange(6.0))
        assert torch.equal(saved["optimizer"]["state"][0]["momentum_buffer"], torch.ones(3))


def test_a_failed_write_is_raised_by_the_next_wait_and_only_once(tmp_path):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    writer = CheckpointWriter()
    writer.submit({"w": torch.zeros(2)}, [tmp_path / "blocker" / "last.pth"])
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        writer.wait()
    writer.wait()  # reported once


@HOOKS.register("WriterTestProbe")
class Probe(Hook):
    """Looks at the writer during the second epoch's first iteration, then lets it finish."""
    priority = 60
    seen: list[bool] = []
    release = threading.Event()

    def after_iter(self, trainer) -> None:
        if trainer.epoch == 1 and trainer.inner_iter == 0:
            Probe.seen.append(trainer.checkpoint_writer.busy)
            Probe.release.set()


def test_training_goes_on_while_the_checkpoint_is_written(cls_root, tmp_path, monkeypatch):
    real_save = torch.save

    def slow_save(obj, f, *a, **k):  # epoch 1's write lasts until epoch 2 has trained a step
        if obj.get("epoch") == 1:
            Probe.release.wait(timeout=20)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", slow_save)
    Probe.seen.clear()
    Probe.release.clear()
    cfg = cls_config(cls_root, tmp_path / "run", hooks=[{"type": "WriterTestProbe"}])
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    assert Probe.seen == [True]  # a synchronous write would still be blocked in torch.save
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)
    assert last["epoch"] == 2  # the run returned with every write finished


def test_only_writes_that_another_epoch_overlaps_copy_the_state(cls_root, tmp_path,
                                                                monkeypatch):
    """The last epoch's write (and so a one-epoch anomaly fit's, with its memory bank) is made
    in place: no second copy of the state in memory when nothing would run beside it."""
    real_submit, copied = CheckpointWriter.submit, []

    def recording_submit(self, state, paths, then=None, background=True):
        if background:  # the only branch that copies the state
            copied.append(state["epoch"])
        return real_submit(self, state, paths, then, background)

    monkeypatch.setattr(CheckpointWriter, "submit", recording_submit)
    cfg = cls_config(cls_root, tmp_path / "run")
    cfg["train"]["epochs"] = 3
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    assert copied == [1, 2]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pth",
                      weights_only=True)["epoch"] == 3


def test_full_disk_in_a_middle_epoch_stops_the_run(cls_root, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_on_epoch_1(obj, f, *a, **k):
        if obj.get("epoch") == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_on_epoch_1)
    cfg = cls_config(cls_root, tmp_path / "run")
    cfg["train"]["epochs"] = 3
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 2
    err = capsys.readouterr().err
    assert "cannot write checkpoint" in err and "last.pth" in err and "disk is full" in err
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == []  # no temp file, no later epoch
    assert not ckpt_io.remove_orphaned_temps(folder)
