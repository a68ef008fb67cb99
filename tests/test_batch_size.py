"""data.batch_size / data.val_batch_size, -1 included, resolved by one function
(aicore.engine.autobatch.resolve_batch_size) for every mode and task."""
import json
import shutil

import pytest

from aicore.errors import ConfigError
from tests.conftest import ROOT, run_cli, write_config


def _metrics(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_eval_with_batch_size_minus_one(capsys, tmp_path, trained_run):
    """eval builds its loader after loading the checkpoint; -1 (in either key) must not reach
    the DataLoader or a model that eval does not have, and the metrics do not depend on it."""
    cfg, run = trained_run
    work = tmp_path / "run"
    shutil.copytree(run, work)  # the shared run stays untouched
    common = ["-c", str(cfg), "-o", "mode=eval", "-o", f"work_dir={work}"]
    assert run_cli(*common, "-o", f"eval.out={tmp_path / 'fixed'}", "-o",
                   "data.val_batch_size=4") == 0
    capsys.readouterr()
    for i, override in enumerate(["data.batch_size=-1", "data.val_batch_size=-1"]):
        out = tmp_path / f"auto{i}"
        assert run_cli(*common, "-o", f"eval.out={out}", "-o", override) == 0
        err = capsys.readouterr().err
        key = override.split("=")[0]
        assert f"{key} = -1 on CPU: using 24" in err, err  # the 24 val images in one batch
        fixed, auto = _metrics(tmp_path / "fixed" / "metrics.json"), _metrics(out / "metrics.json")
        assert auto.keys() == fixed.keys()
        for k, v in fixed.items():
            if isinstance(v, float):
                assert auto[k] == pytest.approx(v, abs=1e-6), k


def test_anomaly_fit_and_eval_with_batch_size_minus_one(capsys, tmp_path):
    """The anomaly fit has its own loader (every good image once); -1 is resolved there too."""
    from aicore.tasks.anomaly.synthetic import make
    root = make(tmp_path / "mvtec", size=32, n_train=6, n_test_good=3, n_test_defect=1,
                categories=["weave"])
    cfg = write_config(tmp_path / "an.json", {
        "_base_": str(ROOT / "configs" / "_base_" / "anomaly.json"),
        "work_dir": str(tmp_path / "run"), "seed": 0,
        "data": {"root": str(root), "input_size": [32, 32], "batch_size": -1, "num_workers": 0,
                 "dataset": {"type": "MVTecDataset", "category": "weave"}},
        "model": {"type": "PaDiM", "backbone": "resnet18", "n_features": 16},
        "train": {"progress": False}})
    assert run_cli("-c", str(cfg)) == 0
    err = capsys.readouterr().err
    assert "data.batch_size = -1 on CPU: using 6" in err, err  # the 6 good training images
    assert (tmp_path / "run" / "checkpoints" / "best.pth").is_file()
    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    metrics = _metrics(tmp_path / "run" / "eval" / "metrics.json")
    assert 0.0 <= metrics["image_AUROC"] <= 1.0


def test_resolve_batch_size_rules(tmp_path, cls_root):
    from aicore import config as C
    from aicore.engine.autobatch import resolve_batch_size
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import trainer_class
    from tests.conftest import cls_config
    import_tasks(["classification"])

    def trainer(**data):
        raw = cls_config(cls_root, tmp_path / "w")
        raw["data"].update(data)
        cfg = C.load_config(write_config(tmp_path / "c.json", raw))
        C.validate(cfg)
        return trainer_class(cfg)(cfg)

    ten, five = list(range(10)), list(range(5))
    t = trainer(batch_size=4)
    assert resolve_batch_size(t, ten, True) == 4 and resolve_batch_size(t, ten, False) == 4
    t = trainer(batch_size=4, val_batch_size=3)
    assert resolve_batch_size(t, ten, True) == 4 and resolve_batch_size(t, ten, False) == 3
    t = trainer(batch_size=-1, val_batch_size=2)
    assert resolve_batch_size(t, five, True) == 5  # CPU: min(32, samples per process)
    assert resolve_batch_size(t, ten, True) == 5  # measured once per kind, then kept
    assert resolve_batch_size(t, ten, False) == 2
    t = trainer(batch_size=4, val_batch_size=-1)
    assert resolve_batch_size(t, ten, False, model=None) == 10
    t.cfg.data.val_batch_size = 0  # past the config check only by editing the loaded config
    with pytest.raises(ConfigError, match="data.val_batch_size = 0"):
        resolve_batch_size(t, ten, False)
