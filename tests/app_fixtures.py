"""Runs and data sets the app tests share: two finished classification runs (one evaluated),
one evaluated anomaly run, and a data root with a corrupt image. Built once per session.
``build_world(base, tasks=True)`` adds an evaluated two-class OK/NG classification run
("okng"), segmentation run ("seg") and detection run ("det") with their data sets."""
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


def binary_data(out: Path) -> Path:
    """A two-class OK/NG data set: the synthetic circles as "good", squares as "defect"."""
    import shutil

    from aicore.tasks.classification.synthetic import make as make_cls
    src = make_cls(out.parent / f"{out.name}_src", n_train=12, n_val=8, n_test=0, seed=3)
    for split in ("train", "val"):
        for shape, name in (("circle", "good"), ("square", "defect")):
            shutil.copytree(src / split / shape, out / split / name)
    shutil.rmtree(src)
    return out


def seg_config(root: Path, work_dir: Path) -> dict:
    return {"task": "segmentation", "work_dir": str(work_dir), "seed": 0,
            "data": {"root": str(root), "in_channels": 3, "input_size": [32, 32],
                     "batch_size": 4, "num_workers": 0,
                     "dataset": {"type": "SegmentationDataset"}},
            "model": {"type": "SMPModel", "arch": "Unet", "encoder_name": "tu-resnet10t",
                      "encoder_weights": None, "encoder_depth": 3,
                      "decoder_channels": [16, 16, 8]},
            "loss": {"type": "CrossEntropyLoss"}, "optimizer": {"type": "AdamW", "lr": 0.003},
            "train": {"epochs": 1, "progress": False}}


def det_config(root: Path, work_dir: Path) -> dict:
    return {"_base_": str(Path(__file__).resolve().parents[1] / "configs/_base_/detection.json"),
            "work_dir": str(work_dir), "seed": 0,
            "data": {"root": str(root), "input_size": [64, 64], "batch_size": 4,
                     "num_workers": 0},
            "model": {"type": "YOLOX", "size": "nano"},
            "train": {"epochs": 1, "progress": False, "hooks": []}}


def build_tasks(base: Path, data: Path, runs: Path) -> None:
    from aicore.tasks.detection.synthetic import make as make_det
    from aicore.tasks.segmentation.synthetic import make as make_seg
    ok_root = binary_data(data / "okng")
    seg_root = make_seg(data / "seg", size=32, n_train=8, n_val=4, n_test=0)
    det_root = make_det(data / "det", size=64, n_train=8, n_val=4, n_test=0, seed=1)
    configs = [write_config(base / "okng.json", cls_config(ok_root, runs / "okng", epochs=2)),
               write_config(base / "seg.json", seg_config(seg_root, runs / "seg")),
               write_config(base / "det.json", det_config(det_root, runs / "det"))]
    for cfg in configs:
        assert run_cli("-c", str(cfg)) == 0
        assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0


def build_world(base: Path, tasks: bool = False) -> AppWorld:
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
    if tasks:
        build_tasks(base, data, runs)
    return AppWorld(runs=runs, data=data, cls_cfg=a)
