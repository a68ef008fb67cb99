"""Every bad input a user can make: one clear message naming the file or key, exit status 2,
and nothing already written (an earlier run's checkpoints, logs, metrics) touched."""
import shutil

import pytest

from tests.conftest import cls_config, run_cli, snapshot, write_config


@pytest.fixture
def previous_run(trained_run, tmp_path):
    """A copy of a finished run that a bad invocation must leave exactly as it was."""
    cfg, run = trained_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    return work, snapshot(work)


def _expect_exit2(capsys, args, *needles):
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _cfg_file(tmp_path, cls_root, work, **patch):
    cfg = cls_config(cls_root, work)
    for dotted, value in patch.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return write_config(tmp_path / "bad.json", cfg)


@pytest.mark.parametrize("patch,needles", [
    ({"model__type": "TimmClasifier"}, ["unknown models type 'TimmClasifier'", "TimmClassifier"]),
    ({"optimizer__momentun": 0.9}, ["optimizer.momentun", "Did you mean: momentum"]),
    ({"model__name": "resnet10"}, ["not a timm model", "resnet10t"]),
    ({"data__root": "/nonexistent/data"}, ["/nonexistent/data", "folder not found"]),
    ({"train__best_metric": "acc"}, ["train.best_metric = 'acc'", "top1, precision_macro"]),
])
def test_config_mistakes(capsys, tmp_path, cls_root, previous_run, patch, needles):
    work, before = previous_run
    path = _cfg_file(tmp_path, cls_root, work, train__resume=True, **patch)
    _expect_exit2(capsys, ["-c", str(path)], *needles)
    assert snapshot(work) == before


def test_invalid_json(capsys, tmp_path, previous_run):
    work, before = previous_run
    path = tmp_path / "broken.json"
    path.write_text('{"task": "classification",\n "work_dir": "%s"\n "seed": 1}' % work)
    _expect_exit2(capsys, ["-c", str(path)], f"{path}:3:2", "invalid JSON")
    assert snapshot(work) == before


def _copy_data(cls_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cls_root, root)
    return root


def test_corrupt_image(capsys, tmp_path, cls_root, previous_run):
    work, before = previous_run
    root = _copy_data(cls_root, tmp_path)
    bad = root / "train" / "circle" / "train_0003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    path = write_config(tmp_path / "c.json", cls_config(root, work, resume=True))
    _expect_exit2(capsys, ["-c", str(path)], str(bad), "corrupt")
    assert snapshot(work) == before


def test_empty_class_folder(capsys, tmp_path, cls_root, previous_run):
    work, before = previous_run
    root = _copy_data(cls_root, tmp_path)
    (root / "train" / "hexagon").mkdir()
    path = write_config(tmp_path / "c.json", cls_config(root, work, resume=True))
    _expect_exit2(capsys, ["-c", str(path)], str(root / "train" / "hexagon"), "empty")
    assert snapshot(work) == before


def test_label_out_of_range_in_list_file(capsys, tmp_path, previous_run):
    from aicore.tasks.classification.synthetic import make
    work, before = previous_run
    root = make(tmp_path / "lst", layout="list", n_train=2, n_val=1, n_test=1)
    lines = (root / "train.txt").read_text().split()
    lines[3] = f"{lines[3]} 7"
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    path = write_config(tmp_path / "c.json", cls_config(root, work, resume=True))
    _expect_exit2(capsys, ["-c", str(path)], f"{root / 'train.txt'}:4", "class index 7",
                  "0..3")
    assert snapshot(work) == before


def test_checkpoint_from_another_model(capsys, trained_run, previous_run):
    cfg, _ = trained_run
    work, before = previous_run
    ckpt = work / "checkpoints" / "best.pth"
    for mode in ("eval", "export"):
        _expect_exit2(capsys, ["-c", str(cfg), "-o", f"mode={mode}", "-o", "model.name=resnet14t",
                               "-o", f"work_dir={work}", "-o", f"{mode}.checkpoint={ckpt}"],
                      str(ckpt), "does not fit the model")
    # resuming with another model is refused before anything is written
    _expect_exit2(capsys, ["-c", str(cfg), "-o", "model.name=resnet14t", "-o", f"work_dir={work}",
                           "-o", "train.resume=true"], "does not fit the model")
    assert snapshot(work) == before


def test_not_a_checkpoint(capsys, trained_run, tmp_path):
    cfg, _ = trained_run
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    _expect_exit2(capsys, ["-c", str(cfg), "-o", "mode=eval", "-o", f"eval.checkpoint={junk}",
                           "-o", f"work_dir={tmp_path / 'w'}"], str(junk))


def test_existing_run_is_not_overwritten(capsys, trained_run, previous_run):
    cfg, _ = trained_run
    work, before = previous_run
    _expect_exit2(capsys, ["-c", str(cfg), "-o", f"work_dir={work}"], "already holds a training run",
                  "train.resume=true")
    assert snapshot(work) == before


def test_fp16_on_cpu_is_refused(capsys, trained_run, tmp_path):
    cfg, _ = trained_run
    _expect_exit2(capsys, ["-c", str(cfg), "-o", "train.amp=fp16", "-o",
                           f"work_dir={tmp_path / 'w'}"], "fp16", "bf16")
    assert not (tmp_path / "w").exists()


def test_unsupported_channels_and_missing_demo_source(capsys, trained_run, tmp_path):
    cfg, run = trained_run
    _expect_exit2(capsys, ["-c", str(cfg), "-o", "data.in_channels=4"], "data.in_channels")
    _expect_exit2(capsys, ["-c", str(cfg), "-o", "mode=demo", "-o", "demo.source=/no/such.png",
                           "-o", f"demo.out={tmp_path / 'd'}"], "/no/such.png")


# Config and command-line mistakes against a finished run (resume on, so a value that slipped
# through validation would touch it): (extra arguments, text the message must contain).
CLI_MISTAKES = [
    (["-o", "train.epochs"], "expected KEY.PATH=VALUE"),
    (["-o", "train..epochs=3"], "is not a dotted key path"),
    (["-o", "trian.epochs=3"], "unknown config key 'trian'"),
    (["-o", "train.epoch=3"], "Did you mean: epochs"),
    (["-o", "task=classificaton"], "choose one of classification"),
    (["-o", "mode=train"], "'mode' = 'train'"),
    (["-o", "train.epochs=abc"], "(set in -o train.epochs=abc)"),
    (["-o", "optimizer.lr=-1"], "'optimizer.lr' = -1 (set in -o optimizer.lr=-1)"),
    (["-o", "data.input_size=[0,0]"], "'data.input_size' = [0, 0]"),
    (["-o", "eval.tta=flip", "-o", "mode=eval"], "'eval.tta' = \"flip\""),
    (["-o", "demo.cam=gradcam", "-o", "mode=demo"], "'demo.cam' = \"gradcam\""),
    (["-o", 'export.formats=["tflite"]', "-o", "mode=export"], "'export.formats'"),
    (["-o", 'train.ema={"decay": 1.5}'], "'train.ema.decay' = 1.5"),
    (["-o", 'train.hooks=[{"type": "EvalHok"}]'], "unknown hooks type 'EvalHok'"),
    (["-o", 'scheduler={"type": "cosine", "warmup_epochs": "one"}'],
     "'scheduler.warmup_epochs' = \"one\""),
    (["-o", "custom_imports=[\"/no/such/module.py\"]"], "file not found: /no/such/module.py"),
]


@pytest.mark.parametrize("extra,needle", CLI_MISTAKES, ids=[" ".join(e) for e, _ in CLI_MISTAKES])
def test_cli_mistakes(capsys, trained_run, previous_run, extra, needle):
    cfg, _ = trained_run
    work, before = previous_run
    _expect_exit2(capsys, ["-c", str(cfg), "-o", f"work_dir={work}", "-o", "train.resume=true",
                           *extra], needle)
    assert snapshot(work) == before


def test_config_file_mistakes(capsys, tmp_path):
    cases = {
        "list.json": ("[1, 2]", "a config must be a JSON object"),
        "cycle.json": ('{"_base_": "cycle.json"}', "_base_ cycle"),
        "nobase.json": ('{"_base_": "missing.json"}', "_base_ file not found: missing.json"),
        "badbase.json": ('{"_base_": 5}', "'_base_' must be a path"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        _expect_exit2(capsys, ["-c", str(path), "--check"], needle)
    _expect_exit2(capsys, ["-c", str(tmp_path / "absent.json")], "config file not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)


@pytest.mark.parametrize("key,value,needle", [
    ("init_from", "weights/start.pth", "point it at an existing checkpoint"),
    ("pretrained", "weights/start.pth", "true (download via timm) or false"),
])
def test_missing_weight_file_fails_check_and_training(capsys, tmp_path, cls_root, key, value,
                                                      needle):
    """--check fails on a model.init_from / model.pretrained file that does not exist, exactly
    as training would open it: relative to the directory you run from, not the config's."""
    conf_dir, run_dir = tmp_path / "conf", tmp_path / "elsewhere"
    (conf_dir / "weights").mkdir(parents=True)
    run_dir.mkdir()
    (conf_dir / "weights" / "start.pth").write_bytes(b"")  # exists next to the config only
    work = tmp_path / "work"
    cfg = cls_config(cls_root, work)
    cfg["model"][key] = value
    path = write_config(conf_dir / "cfg.json", cfg)
    for extra in (["--check"], []):
        code = run_cli("-c", str(path), *extra, cwd=run_dir)
        err = capsys.readouterr().err
        assert code == 2, err
        message = err.strip().splitlines()[-1]
        assert message.startswith(f"error: 'model.{key}' = '{value}'"), message
        assert f"file not found: {run_dir / value}" in message, message
        assert needle in message, message
    assert not work.exists()  # training stopped before writing anything
    # run from the config's folder the same relative path exists: --check passes
    assert run_cli("-c", str(path), "--check", cwd=conf_dir) == 0, capsys.readouterr().err


def test_empty_pretrained_is_called_empty(capsys, tmp_path, cls_root):
    cfg = cls_config(cls_root, tmp_path / "work")
    cfg["model"]["pretrained"] = ""
    path = write_config(tmp_path / "cfg.json", cfg)
    message = _expect_exit2(capsys, ["-c", str(path), "--check"], "'model.pretrained' = ''",
                            "an empty path", "true (download via timm) or false")
    assert "folder" not in message


def test_weight_names_that_are_not_files_pass_check(capsys, tmp_path, cls_root):
    """pretrained: true (downloaded by timm when the model is built) is not a file path, and
    init_from is only opened when training."""
    cfg = cls_config(cls_root, tmp_path / "work")
    cfg["model"]["pretrained"] = True
    cfg["model"]["init_from"] = str(tmp_path / "absent.pth")
    path = write_config(tmp_path / "cfg.json", cfg)
    assert run_cli("-c", str(path), "--check", "-o", "mode=eval") == 0, capsys.readouterr().err
    _expect_exit2(capsys, ["-c", str(path), "--check"], "'model.init_from'",
                  f"file not found: {tmp_path / 'absent.pth'}")
