"""Every plain config value and component argument is checked before work starts: one line
naming the key, what was expected, the value and where it was set, exit status 2, with and
without --check, and no work_dir created."""
import json

import pytest

from aicore.config import DEFAULTS, OPEN_DICTS
from aicore.config_values import RULES
from tests.conftest import cls_config, run_cli, write_config

# (override, text the message must contain)
OVERRIDES = [
    ("train.epochs=abc", "'train.epochs' = \"abc\" (set in -o train.epochs=abc): expected an "
                         "integer >= 1"),
    ("train.epochs=1e400", "'train.epochs' = Infinity"),
    ("train.epochs=-3", "'train.epochs' = -3"),
    ("train.epochs=1.5", "'train.epochs' = 1.5"),
    ("train.epochs=0", "expected an integer >= 1"),
    ("train.epochs=true", "'train.epochs' = true"),
    ("train.epochs=null", "'train.epochs' = null"),
    ("data=5", "'data' = 5 (set in -o data=5): expected an object"),
    ("train=[]", "'train' = []"),
    ("eval=1", "'eval' = 1"),
    ("train.ema=5", "'train.ema' = 5"),
    ("train.ema=\"yes\"", "'train.ema' = \"yes\""),
    ('train.ema={"decay": 2}', "'train.ema.decay' = 2"),
    ('train.ema={"decay": 0}', "expected a number in (0, 1]"),
    ('train.ema={"decy": 0.9}', "'train.ema.decy'"),
    ('train.ema={"warmup": 1}', "'train.ema.warmup' = 1"),
    ("data.num_workers=-1", "'data.num_workers' = -1 (set in -o data.num_workers=-1): expected "
                            "an integer >= 0"),
    ("data.num_workers=two", "'data.num_workers' = \"two\""),
    ("data.batch_size=0", "'data.batch_size' = 0"),
    ("data.batch_size=-2", "or -1"),
    ("data.batch_size=8.5", "'data.batch_size' = 8.5"),
    ("data.val_batch_size=0", "'data.val_batch_size' = 0"),
    ("data.input_size=[0,0]", "'data.input_size' = [0, 0]"),
    ("data.input_size=[32]", "a list of 2 items"),
    ("data.input_size=[32,32,3]", "'data.input_size' = [32, 32, 3]"),
    ("data.input_size=big", "'data.input_size' = \"big\""),
    ("data.input_size=-5", "'data.input_size' = -5"),
    ("data.mean=[0.5,2,0.5]", "'data.mean' = [0.5, 2, 0.5]"),
    ("data.std=[0.2,0,0.2]", "'data.std'"),
    ("data.mean=0.5", "'data.mean' = 0.5"),
    ("data.auto_batch_fraction=1.5", "'data.auto_batch_fraction' = 1.5"),
    ("data.auto_batch_fraction=0", "expected a number in (0, 1]"),
    ("data.root=5", "'data.root' = 5"),
    ("data.train.transforms=5", "'data.train.transforms' = 5"),
    ("optimizer.lr=-1", "'optimizer.lr' = -1 (set in -o optimizer.lr=-1): expected a number > 0"),
    ("optimizer.lr=0", "'optimizer.lr' = 0"),
    ("optimizer.lr=fast", "'optimizer.lr' = \"fast\""),
    ("optimizer.momentum=1.5", "'optimizer.momentum' = 1.5"),
    ("optimizer.weight_decay=-0.1", "'optimizer.weight_decay' = -0.1"),
    ("optimizer.nesterov=1", "'optimizer.nesterov' = 1"),
    ("scheduler.warmup_epochs=-1", "'scheduler.warmup_epochs' = -1"),
    ("scheduler.warmup_ratio=2", "'scheduler.warmup_ratio' = 2"),
    ("scheduler.min_lr_ratio=x", "'scheduler.min_lr_ratio' = \"x\""),
    ('scheduler={"type": "step", "gamma": -0.5}', "'scheduler.gamma' = -0.5"),
    ('scheduler={"type": "multistep", "milestones": [-1]}', "'scheduler.milestones' = [-1]"),
    ('train.hooks=[{"type": "EMAHook", "priority": "x"}]', "'train.hooks.0.priority' = \"x\""),
    ("train.accumulate=0", "'train.accumulate' = 0"),
    ("train.clip_grad=-1", "'train.clip_grad' = -1"),
    ("train.clip_grad=0", "expected a number > 0 or null"),
    ("train.device=gpu", "'train.device' = \"gpu\""),
    ("train.device=cuda:x", "'train.device' = \"cuda:x\""),
    ("train.amp=fp32", "'train.amp' = \"fp32\""),
    ("train.amp=true", "'train.amp' = true"),
    ("train.sync_bn=yes", "'train.sync_bn' = \"yes\""),
    ("train.eval_interval=0", "'train.eval_interval' = 0"),
    ("train.best_mode=maximum", "'train.best_mode' = \"maximum\""),
    ("train.log_interval=-5", "'train.log_interval' = -5"),
    ("train.hooks={}", "'train.hooks' = {}"),
    ("train.hooks=[5]", "'train.hooks' = [5]"),
    ("train.class_balance=weights", "'train.class_balance' = \"weights\""),
    ("train.freeze_backbone_epochs=-1", "'train.freeze_backbone_epochs' = -1"),
    ("train.mixup=0.5", "'train.mixup' = 0.5"),
    ("train.resume=3", "'train.resume' = 3"),
    ("train.save_interval=-1", "'train.save_interval' = -1"),
    ("train.keep_last=0", "'train.keep_last' = 0"),
    ("seed=1.5", "'seed' = 1.5"),
    ("custom_imports=mod", "'custom_imports' = \"mod\""),
    ("eval.tta=flip", "'eval.tta' = \"flip\" (set in -o eval.tta=flip): expected one of null, "
                      "\"hflip\", \"tencrop\""),
    ("eval.split=training", "'eval.split' = \"training\""),
    ("eval.weights=best", "'eval.weights' = \"best\""),
    ("eval.tsne=1", "'eval.tsne' = 1"),
    ("demo.cam=gradcam", "'demo.cam' = \"gradcam\""),
    ("demo.max_images=0", "'demo.max_images' = 0"),
    ("demo.backend=tensorrt", "'demo.backend' = \"tensorrt\""),
    ('export.formats=["onnx","trt"]', "'export.formats' = [\"onnx\", \"trt\"]"),
    ("export.formats=[]", "(at least 1)"),
    ("export.formats=onnx", "'export.formats' = \"onnx\""),
    ("export.opset=3", "'export.opset' = 3"),
    ("export.tolerance=0", "'export.tolerance' = 0"),
    ("export.parity_images=-1", "'export.parity_images' = -1"),
    ("export.half=fp16", "'export.half' = \"fp16\""),
    ("export.benchmark_iters=0", "'export.benchmark_iters' = 0"),
]


# keys only one task has (its TaskSpec): (task, override, text the message must contain)
TASK_OVERRIDES = [
    ("segmentation", "eval.sliding_window=5", "'eval.sliding_window' = 5"),
    ("segmentation", 'eval.sliding_window={"window": [0, 64]}',
     "'eval.sliding_window.window' = [0, 64]"),
    ("segmentation", 'eval.sliding_window={"overlap": 2}', "'eval.sliding_window.overlap' = 2"),
    ("detection", "demo.score_thresh=1.5", "'demo.score_thresh' = 1.5"),
    ("detection", "export.nms=1", "'export.nms' = 1"),
    # another task's key is not this task's
    ("classification", "demo.score_thresh=0.5", "unknown config key 'demo.score_thresh' (set in "
                                               "-o demo.score_thresh=0.5). Only task detection "
                                               "has it; this config's task is 'classification'"),
    ("detection", "eval.tta=hflip", "Only task classification has it"),
]


@pytest.fixture
def cfg_path(tmp_path, cls_root):
    return write_config(tmp_path / "cfg.json", cls_config(cls_root, tmp_path / "run"))


def _refused(capsys, *args) -> str:
    code = run_cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("override,needle", OVERRIDES, ids=[o for o, _ in OVERRIDES])
def test_bad_value_refused(capsys, tmp_path, cfg_path, override, needle):
    before = cfg_path.read_bytes()
    for extra in (["--check"], []):
        line = _refused(capsys, "-c", str(cfg_path), "-o", override, *extra)
        assert needle in line, line
        assert f"(set in -o {override})" in line, line  # blamed on the -o, not on the file
    assert not (tmp_path / "run").exists()
    assert cfg_path.read_bytes() == before


@pytest.mark.parametrize("task,override,needle", TASK_OVERRIDES,
                         ids=[f"{t}:{o}" for t, o, _ in TASK_OVERRIDES])
def test_bad_task_value_refused(capsys, tmp_path, task, override, needle):
    from tests.conftest import ROOT
    line = _refused(capsys, "-c", str(ROOT / "configs" / task / "quickstart.json"),
                    "-o", f"work_dir={tmp_path / 'run'}", "-o", override, "--check")
    assert needle in line, line
    assert f"(set in -o {override})" in line, line
    assert not (tmp_path / "run").exists()


def test_other_tasks_keys_at_their_defaults_are_dropped(capsys, tmp_path):
    """A run's config.json from before tasks owned their keys lists every task's keys at the
    defaults; it still loads, without them."""
    from tests.conftest import ROOT
    old = ["eval.tta=null", "eval.tsne=true", "demo.cam=null", "demo.score_thresh=null",
           "export.nms=false", "train.mixup=null"]
    args = [a for o in old for a in ("-o", o)]
    assert run_cli("-c", str(ROOT / "configs" / "segmentation" / "quickstart.json"),
                   "-o", f"work_dir={tmp_path / 'run'}", *args, "--check") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert "tta" not in cfg["eval"] and "nms" not in cfg["export"] and "cam" not in cfg["demo"]
    assert cfg["eval"]["sliding_window"] is False  # the segmentation key stays


def test_value_from_the_file_is_blamed_on_the_file(capsys, tmp_path, cls_root):
    cfg = cls_config(cls_root, tmp_path / "run", epochs="ten")
    path = write_config(tmp_path / "cfg.json", cfg)
    line = _refused(capsys, "-c", str(path), "--check")
    assert f"'train.epochs' = \"ten\" (set in {path}): expected an integer >= 1" in line
    # an -o that replaces the whole section takes the blame for what is below it
    line = _refused(capsys, "-c", str(path), "-o", 'train={"epochs": -1}', "--check")
    assert "'train.epochs' = -1 (set in -o train={\"epochs\": -1})" in line
    assert not (tmp_path / "run").exists()


def test_value_from_a_base_file_is_blamed_on_the_base(capsys, tmp_path, cls_root):
    base = write_config(tmp_path / "base.json", {"data": {"num_workers": -4}})
    cfg = cls_config(cls_root, tmp_path / "run")
    del cfg["data"]["num_workers"]
    path = write_config(tmp_path / "child.json", {"_base_": "base.json", **cfg})
    line = _refused(capsys, "-c", str(path), "--check")
    assert f"'data.num_workers' = -4 (set in {base})" in line


def test_non_utf8_config(capsys, tmp_path, cls_root):
    path = tmp_path / "latin1.json"
    text = json.dumps(cls_config(cls_root, tmp_path / "run"), indent=2)
    path.write_bytes(text.replace('"seed": 0', '"seed": 0, "work_dir": "caf\xe9"')
                     .encode("latin-1"))
    line = _refused(capsys, "-c", str(path), "--check")
    assert str(path) in line and "not UTF-8" in line and "0xe9" in line
    assert not (tmp_path / "run").exists()


def test_duplicate_class_name_in_labels_file(capsys, tmp_path):
    from aicore.tasks.classification.synthetic import make
    root = make(tmp_path / "lst", layout="list", n_train=2, n_val=1, n_test=1)
    labels = root / "labels.txt"
    names = labels.read_text().split()
    labels.write_text("\n".join(names[:-1] + [names[0]]) + "\n")
    path = write_config(tmp_path / "c.json", cls_config(root, tmp_path / "run"))
    line = _refused(capsys, "-c", str(path))
    assert f"{labels}:{len(names)}" in line and repr(names[0]) in line and "line 1" in line
    assert not (tmp_path / "run").exists()


def _keys(node, prefix=""):
    for k, v in node.items():
        yield prefix + k
        if isinstance(v, dict) and v and prefix + k not in OPEN_DICTS:
            yield from _keys(v, prefix + k + ".")


def _specs():
    from aicore.registry import TASKS
    from aicore.tasks.spec import task_names
    return [TASKS.get(n) for n in task_names()]


def test_every_plain_key_has_a_rule():
    missing = [k for k in _keys(DEFAULTS) if k not in RULES and k not in ("task", "mode")]
    assert not missing
    for spec in _specs():  # a task's own keys come with their rules
        assert spec.defaults or not spec.rules, spec.name
        missing = [k for k in _keys(spec.defaults) if k not in spec.rules and k not in DEFAULTS]
        assert not missing, (spec.name, missing)
        # and they are the task's own: no built-in key is redefined
        shared = [k for k in spec.rules if k in RULES]
        assert not shared, (spec.name, shared)


def test_defaults_satisfy_their_rules():
    from aicore.config_values import find_problem
    from aicore.tasks.spec import merged_defaults
    for spec in [None, *_specs()]:
        rules = RULES if spec is None else spec.rules
        defaults = DEFAULTS if spec is None else merged_defaults(DEFAULTS, spec)
        for key, rule in rules.items():
            node = defaults
            for part in key.split("."):
                node = node[part]
            assert find_problem(rule, node, key) is None, key


BUGGY_MODEL = '''
import torch.nn as nn
from aicore.registry import MODELS


@MODELS.register("BuggyNet")
class BuggyNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.scale = width / 0  # the bug
'''


def test_component_that_raises_in_its_constructor(capsys, tmp_path, cls_root):
    module = tmp_path / "buggy_net.py"
    module.write_text(BUGGY_MODEL)
    cfg = cls_config(cls_root, tmp_path / "run")
    cfg["custom_imports"] = [str(module)]
    cfg["model"] = {"type": "BuggyNet", "width": 4}
    path = write_config(tmp_path / "c.json", cfg)
    line = _refused(capsys, "-c", str(path))
    assert f"'model' (set in {path}): models type 'BuggyNet'" in line
    assert "raised inside its constructor: ZeroDivisionError: division by zero" in line
    assert "--debug" in line
    # --debug adds the traceback into the custom module above the same one-line message
    assert run_cli("-c", str(path), "--debug") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f'File "{module}", line 10' in err
    assert err.strip().splitlines()[-1] == line
    assert not (tmp_path / "run").exists()
