"""Runs and data sets the app tests share: two finished classification runs (one evaluated),
one evaluated anomaly run, and a data root with a corrupt image. Built once per session."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conftest import cls_config, run_cli, write_config


@dataclass
class AppWorld:
    runs: Path
    data: Path
    cls_cfg: Path


def anomaly_config(root: Path, work_dir: Path) -> dict:
    return {"_base_": str(Path(__file__).resolve().parents[1] / "configs/_base_/anomaly.json"),
            "work_dir": str(work_dir), "seed": 0,
            "data": {"root": str(root), "input_size": [64, 64], "batch_size": 8,
                     "num_workers": 0, "dataset": {"type": "MVTecDataset", "category": "grid"}},
            "model": {"type": "PaDiM", "backbone": "resnet18", "layers": [1, 2],
                      "n_features": 32, "pretrained": False},
            "train": {"progress": False}}


def build_world(base: Path) -> AppWorld:
    from aicore.tasks.anomaly.synthetic import make as make_anomaly
    from aicore.tasks.classification.synthetic import make as make_cls
    data, runs = base / "data", base / "runs"
    cls_root = make_cls(data / "cls", n_train=10, n_val=5, n_test=2)
    an_root = make_anomaly(data / "anomaly", size=64, n_train=12, n_test_good=6,
                           n_test_defect=3, categories=("grid",))
    a = write_config(base / "cls_a.json", cls_config(cls_root, runs / "cls_a", epochs=2))
    b = write_config(base / "cls_b.json", {**cls_config(cls_root, runs / "cls_b", epochs=1),
                                           "optimizer": {"type": "SGD", "lr": 0.01}})
    an = write_config(base / "anomaly.json", anomaly_config(an_root, runs / "anomaly"))
    for cfg in (a, b, an):
        assert run_cli("-c", str(cfg)) == 0
    for cfg in (a, an):
        assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    # a data set with one image that does not decode, for the Data page
    bad = data / "cls_bad"
    make_cls(bad, n_train=3, n_val=2, n_test=0)
    victim = sorted((bad / "train").rglob("*.png"))[0]
    victim.write_bytes(b"not a png at all")
    return AppWorld(runs=runs, data=data, cls_cfg=a)
