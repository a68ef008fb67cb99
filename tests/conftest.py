"""Shared fixtures: small synthetic data sets and a way to run the CLI in-process."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")


def run_cli(*args: str, cwd: Path | None = None, main=None) -> int:
    """Run `python main.py ARGS` (or another entry point's `main`) in this process; returns the
    exit status (0 on success)."""
    if main is None:
        from aicore.cli import main
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        main(list(args))
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        os.chdir(old)


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cls_root(tmp_path_factory) -> Path:
    """Tiny 4-class colour data set in the folder layout."""
    from aicore.tasks.classification.synthetic import make
    return make(tmp_path_factory.mktemp("data") / "cls", n_train=12, n_val=6, n_test=3)


def cls_config(root: Path, work_dir: Path, **train) -> dict:
    """A fast classification config on the tiny data set."""
    return {
        "task": "classification",
        "work_dir": str(work_dir),
        "seed": 0,
        "data": {"root": str(root), "in_channels": 3, "input_size": [32, 32], "batch_size": 8,
                 "num_workers": 0, "dataset": {"type": "ClassificationDataset", "cache": True},
                 "train": {"transforms": [{"type": "HorizontalFlip", "p": 0.5}]}},
        "model": {"type": "TimmClassifier", "name": "resnet10t"},
        "loss": {"type": "CrossEntropyLoss", "label_smoothing": 0.1},
        "optimizer": {"type": "SGD", "lr": 0.05},
        "scheduler": {"type": "cosine", "warmup_epochs": 1},
        "train": {"epochs": 2, "progress": False, **train},
    }


@pytest.fixture(scope="session")
def trained_run(cls_root, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-epoch classification run: (config path, work_dir). Tests must not modify
    it; copy it first (see `snapshot`)."""
    base = tmp_path_factory.mktemp("trained")
    cfg = write_config(base / "cls.json", cls_config(cls_root, base / "run", ema={"decay": 0.9}))
    assert run_cli("-c", str(cfg)) == 0
    return cfg, base / "run"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under folder, to prove nothing was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch at one intra-op thread for a module's tests, restored after: the models in the
    tests are tiny, and on a shared, busy CPU OpenMP threads that wait for each other made such
    files many times slower (6 min instead of 45 s at load average 10). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
