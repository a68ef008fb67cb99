"""Registry and config: inheritance, overrides, validation messages."""
import json

import pytest

from aicore import config as C
from aicore.errors import ConfigError
from aicore.registry import MODELS, Registry
from aicore.tasks import import_tasks
from tests.conftest import ROOT, run_cli

import_tasks()


def test_duplicate_registration_names_both_sites():
    reg = Registry("things")

    @reg.register("A")
    def first():
        pass

    with pytest.raises(ConfigError) as e:
        @reg.register("A")
        def second():
            pass
    msg = str(e.value)
    assert "registered twice" in msg and msg.count("test_config.py") == 2


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ConfigError) as e:
        MODELS.get("TimmClassifer")
    assert "TimmClassifier" in str(e.value) and "--list models" in str(e.value)


def test_wildcard_listing(capsys):
    assert run_cli("--list", "losses", "*Loss") == 0
    out = capsys.readouterr().out
    assert "CrossEntropyLoss" in out and "FocalLoss" in out and "PolyLoss" in out
    assert run_cli("--list", "models", "resnet1?t") == 0
    assert "resnet10t" in capsys.readouterr().out
    assert run_cli("--list", "transforms", "*Flip") == 0
    assert "HorizontalFlip" in capsys.readouterr().out


def test_base_merge_and_overrides(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({
        "data": {"batch_size": 8, "train": {"transforms": [{"type": "HorizontalFlip"}]}},
        "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.8},
        "train": {"epochs": 5}}))
    (tmp_path / "child.json").write_text(json.dumps({
        "_base_": "base.json",
        "data": {"root": "x", "dataset": {"type": "ClassificationDataset"},
                 "train": {"transforms": [{"type": "VerticalFlip"}]}},
        "model": {"type": "TimmClassifier", "name": "resnet10t"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.01}}))
    cfg = C.load_config(tmp_path / "child.json", ["train.epochs=3", "data.root=/data/x",
                                                   "train.amp=null", "work_dir=out dir"])
    C.validate(cfg)
    assert cfg.data.batch_size == 8                      # dict merged from base
    assert [t.type for t in cfg.data.train.transforms] == ["VerticalFlip"]  # list replaced
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.8  # same type: kwargs merge
    assert cfg.train.epochs == 3 and cfg.data.root == "/data/x" and cfg.train.amp is None
    assert cfg.work_dir == "out dir"


def test_default_work_dir_is_config_stem(tmp_path):
    p = tmp_path / "my_exp.json"
    p.write_text("{}")
    assert C.load_config(p).work_dir.endswith("runs/my_exp")


def test_json_syntax_error_reports_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "task": "classification",\n  "train": {"epochs": 3,}\n}\n')
    with pytest.raises(ConfigError) as e:
        C.load_config(p)
    assert f"{p}:3:" in str(e.value)


def _cfg(tmp_path, **kw):
    base = {"data": {"root": "x", "dataset": {"type": "ClassificationDataset"}},
            "model": {"type": "TimmClassifier", "name": "resnet10t"},
            "loss": {"type": "CrossEntropyLoss"}, "optimizer": {"type": "SGD"}}
    base.update(kw)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(base))
    return C.load_config(p)


@pytest.mark.parametrize("patch,needle", [
    ({"optimizer": {"type": "SGD", "lrr": 0.1}}, "Did you mean: lr"),
    ({"loss": {"type": "CrossEntropyLos"}}, "Did you mean: CrossEntropyLoss"),
    ({"trian": {"epochs": 1}}, "Did you mean: train"),
    ({"train": {"epochz": 1}}, "Did you mean: epochs"),
    ({"data": {"root": "x", "dataset": {"type": "ClassificationDataset"},
               "train": {"transforms": [{"type": "HorizontalFlip", "pp": 0.5}]}}}, "Did you mean: p"),
    ({"data": {"root": "x", "dataset": {"type": "ClassificationDataset", "cahce": True}}},
     "Did you mean: cache"),
    ({"model": {"type": "TimmClassifier"}}, "missing required argument 'name'"),
    ({"mode": "evaluate"}, "Did you mean eval"),
    ({"scheduler": {"type": "cosine", "warmup_epoch": 1}}, "warmup_epochs"),
])
def test_validation_names_the_key_and_fix(tmp_path, patch, needle):
    cfg = _cfg(tmp_path, **patch)
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    assert needle in str(e.value)
    assert str(tmp_path / "c.json") in str(e.value) or "mode" in str(e.value)


def test_every_shipped_config_validates():
    configs = sorted((ROOT / "configs").rglob("*.json"))
    configs = [c for c in configs if "_base_" not in c.parts]
    assert configs
    for path in configs:
        assert run_cli("-c", str(path), "--check", cwd=ROOT) == 0, path


def test_nested_albumentations_containers(tmp_path):
    cfg = _cfg(tmp_path, data={"root": "x", "dataset": {"type": "ClassificationDataset"},
                               "train": {"transforms": [{"type": "OneOf", "p": 1.0, "transforms": [
                                   {"type": "HorizontalFlip", "p": 1.0},
                                   {"type": "VerticalFlip", "p": 1.0}]}]}})
    C.validate(cfg)
    from aicore.data.transforms import build_pipeline
    import numpy as np
    pipe = build_pipeline([t.toDict() for t in cfg.data.train.transforms], "data.train.transforms")
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = pipe(image=img)["image"]
    assert not np.array_equal(out, img)  # exactly one of the two flips fired
    bad = _cfg(tmp_path, data={"root": "x", "dataset": {"type": "ClassificationDataset"},
                               "train": {"transforms": [{"type": "OneOf", "transforms": [
                                   {"type": "HorizontalFlipp"}]}]}})
    with pytest.raises(ConfigError) as e:
        C.validate(bad)
    assert "data.train.transforms.0.transforms.0" in str(e.value)
