"""Loading, merging, overriding and validating JSON configs.

Rules, in one sentence each (README repeats them):
- ``_base_`` (a path or list of paths, relative to the file) is loaded first; dicts merge key by
  key, lists and scalars replace.
- ``-o a.b.c=VALUE`` parses VALUE as JSON, falling back to a plain string, and wins over files.
- Built-in defaults (DEFAULTS below) act as the schema of the plain sections: a key that is not
  there is a typo, and fails with the closest known keys.
- Every ``{"type": ...}`` component is checked against its constructor's signature before any
  work starts.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from dotmap import DotMap

from aicore.errors import AICoreError, ComponentError, ConfigError
from aicore.registry import (DATASETS, EVALUATORS, HOOKS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS,
                             TRAINERS, TRANSFORMS, Registry)

# The tasks, their trainers, whether they train by gradient and the config keys only one task
# has come from the task registry (aicore/tasks/spec.py); DEFAULTS holds the keys every task has.
MODES = ("trainval", "eval", "demo", "export")

# Plain sections and their defaults. A dict value of None marks an open dict (any keys).
DEFAULTS: dict[str, Any] = {
    "task": "classification",
    "mode": "trainval",
    "work_dir": None,  # runs/<config stem>
    "seed": 42,
    "custom_imports": [],
    "data": {
        "root": None,
        "in_channels": 3,
        "input_size": [224, 224],  # H, W fed to the model
        "batch_size": 32,
        "val_batch_size": None,  # defaults to batch_size
        "num_workers": 2,
        "mean": None,  # per-channel, in [0, 1] units; None = ImageNet (3ch) or 0.5 (1ch)
        "std": None,
        "auto_batch_fraction": 0.8,  # batch_size -1 on CUDA: share of GPU memory to fill
        "dataset": {},  # {"type": ..., kwargs shared by every split}
        "train": {"dataset": {}, "transforms": None},
        "val": {"dataset": {}, "transforms": None},
        "test": {"dataset": {}, "transforms": None},
    },
    "model": {},
    "loss": {},
    "optimizer": {},
    "scheduler": {},
    "evaluator": {},
    "train": {
        "trainer": None,  # registered trainer name; None = the task's default
        "epochs": 10,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "amp": None,  # None | "bf16" | "fp16" (fp16 needs CUDA)
        "ema": None,  # None | {"decay": 0.9998, "warmup": true}
        "accumulate": 1,
        "clip_grad": None,  # max global grad norm
        "sync_bn": False,
        "channels_last": False,
        "resume": False,  # true = work_dir/checkpoints/last.pth, or a path
        "overwrite": False,  # allow training into a work_dir that already holds a run
        "eval_interval": 1,
        "val_weights": "both",  # with ema on: "both" (raw and EMA) or "ema" (EMA only) each epoch
        "best_metric": None,  # None = the evaluator's main metric
        "best_mode": "max",
        "log_interval": None,  # iterations between log lines; None = about 5 per epoch (<= 50)
        "progress": True,
        "save_interval": 0,  # also keep checkpoints/epoch_N.pth every N epochs (0 = off)
        "keep_last": None,  # how many epoch_N.pth to keep (None = all)
        "hooks": [],
        "deterministic": False,
        "freeze_backbone_epochs": 0,  # train only the head for the first N epochs
        "save_train_batch": True,  # write train_batch.jpg: what the model sees
        "reuse_memory": True,  # keep freed memory for the next step (glibc malloc; see engine/memory.py)
    },
    "eval": {"checkpoint": None, "split": "val", "weights": "auto", "out": None},
    "demo": {"source": None, "checkpoint": None, "weights": "auto", "out": None,
             "max_images": None,
             "backend": "pytorch"},  # "pytorch" (checkpoint) | "onnx" (export via aicore.deploy)
    "export": {"checkpoint": None, "weights": "auto", "opset": 17, "formats": ["onnx", "torchscript"],
               "tolerance": 1e-4, "parity_images": 8, "out": None,
               "fuse_bn": True,  # fold BatchNorm into the preceding convolution
               "half": False,  # FP16 model and input (built on the GPU when there is one)
               "half_tolerance": 0.01,  # FP16 parity bound against the float32 model
               "benchmark": False,  # latency / FPS of PyTorch, TorchScript and ONNX Runtime
               "benchmark_iters": 50,
               "simplify": False},  # onnxslim the ONNX graph (checked for parity like the rest)
}

OPEN_DICTS = {"data.dataset", "data.train.dataset", "data.val.dataset", "data.test.dataset",
              "model", "loss", "optimizer", "scheduler", "evaluator"}

# Where components live, which registry they come from, and which arguments the framework
# supplies itself (so a config does not have to, and may not be blamed for leaving them out).
COMPONENT_SLOTS: list[tuple[str, Registry, set[str]]] = [
    ("model", MODELS, {"in_chans", "num_classes"}),
    ("loss", LOSSES, {"num_classes", "class_counts", "ignore_index"}),
    ("optimizer", OPTIMIZERS, {"model"}),
    ("scheduler", SCHEDULERS, {"optimizer", "epochs", "iters_per_epoch"}),
    ("evaluator", EVALUATORS, {"num_classes", "class_names"}),
]
DATASET_INJECTED = {"root", "split", "in_channels", "transform", "input_size", "mean", "std"}


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                          f"offset {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}. (JSON allows no comments and no "
            f"trailing commas; strings need double quotes.)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origin: str, origins: dict[str, str], prefix: str = "") -> dict:
    """Deep-merge src into dst: dicts merge, everything else replaces."""
    for key, value in src.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and "type" not in value:
            _merge(dst[key], value, origin, origins, path + ".")
        elif isinstance(value, dict) and isinstance(dst.get(key), dict) and \
                dst[key].get("type") == value.get("type"):
            # same component type: merge its kwargs so a child config can tweak one of them
            _merge(dst[key], value, origin, origins, path + ".")
        else:
            dst[key] = copy.deepcopy(value)
            origins[path] = origin
            if isinstance(value, dict):
                _record(value, origin, origins, path + ".")
    return dst


def _record(node: dict, origin: str, origins: dict[str, str], prefix: str) -> None:
    for key, value in node.items():
        origins[f"{prefix}{key}"] = origin
        if isinstance(value, dict):
            _record(value, origin, origins, f"{prefix}{key}.")


def _load_file(path: Path, origins: dict[str, str], stack: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise ConfigError(f"_base_ cycle: {chain}")
    data = _read_json(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '_base_' must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base)
        if not base_path.exists():
            raise ConfigError(f"{path}: _base_ file not found: {base} (looked at {base_path})")
        _merge(merged, _load_file(base_path, origins, stack + (path,)), str(base_path), origins)
    return _merge(merged, data, str(path), origins)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"-o '{text}': expected KEY.PATH=VALUE, e.g. -o train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"-o '{text}': '{key}' is not a dotted key path")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def _apply_override(cfg: dict, parts: list[str], value: Any) -> None:
    node = cfg
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> DotMap:
    """Load, merge with defaults and overrides, and validate a config file."""
    path = Path(path)
    origins: dict[str, str] = {}
    cfg = copy.deepcopy(DEFAULTS)
    # _load_file records which file set each key (a _base_ or the file itself); merging the
    # result into the defaults must not re-blame them all on the top file
    _merge(cfg, _load_file(path, origins), str(path), {})
    for text in overrides or []:
        parts, value = parse_override(text)
        _apply_override(cfg, parts, value)
        key = ".".join(parts)
        for stale in [k for k in origins if k.startswith(key + ".")]:
            del origins[stale]  # what the file set below this key is gone
        origins[key] = f"-o {text}"
        if isinstance(value, dict):
            _record(value, f"-o {text}", origins, key + ".")
    if cfg.get("work_dir") is None:
        cfg["work_dir"] = str(Path("runs") / path.stem)
    cfg["_origins"] = origins
    cfg["_file"] = str(path)
    return DotMap(cfg, _dynamic=False)


def to_dict(cfg: DotMap | dict) -> dict:
    d = cfg.toDict() if isinstance(cfg, DotMap) else copy.deepcopy(cfg)
    return {k: v for k, v in d.items() if not k.startswith("_")}


def where(cfg: DotMap | dict, key: str) -> str:
    """Human description of where a config key was set."""
    origins = cfg.get("_origins", {}) if isinstance(cfg, dict) else cfg._origins
    if isinstance(origins, DotMap):
        origins = origins.toDict()
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        src = origins.get(".".join(parts[:n]))
        if src:
            return f" (set in {src})"
    file = cfg.get("_file") if isinstance(cfg, dict) else cfg._file
    return f" (in {file})" if file else ""


# --------------------------------------------------------------------------------------------
# Validation


def check_custom_imports(cfg: DotMap) -> None:
    """custom_imports is used before the rest is validated (it fills the registries)."""
    from aicore.config_values import RULES, describe_problem, find_problem
    raw = cfg.toDict()
    found = find_problem(RULES["custom_imports"], raw.get("custom_imports"), "custom_imports")
    if found is not None:
        raise ConfigError(describe_problem(found, where(raw, "custom_imports")))


def check_keys(node: dict, schema: dict, prefix: str, cfg: dict) -> None:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in OPEN_DICTS or path.startswith("_"):
            continue
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else \
                f" Known keys: {', '.join(sorted(schema))}."
            owners = _tasks_with_key(path)
            if owners:
                hint = (f" Only task {' and '.join(owners)} has it; this config's task is "
                        f"{cfg.get('task')!r}.")
            raise ConfigError(f"unknown config key '{path}'{where(cfg, path)}.{hint}")
        if isinstance(schema[key], dict) and isinstance(value, dict):
            check_keys(value, schema[key], path + ".", cfg)


def _tasks_with_key(path: str) -> dict[str, Any]:
    """task name -> its default, for the tasks whose own config keys include `path` (imports
    the built-in tasks: only called for a key the config's task does not have)."""
    from aicore.registry import TASKS
    from aicore.tasks.spec import task_names
    owners = {}
    for name in task_names():
        node: Any = TASKS.get(name).defaults
        for part in path.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            owners[name] = node
    return owners


def drop_other_tasks_defaults(cfg: DotMap, node: dict, schema: dict, prefix: str = "") -> None:
    """Remove keys of other tasks that hold those tasks' defaults. A run's config.json written
    before each task owned its keys lists every task's keys at their defaults; such a file
    still loads. Another task's key set to anything else stays, for check_keys to refuse."""
    for key, value in list(node.items()):
        path = f"{prefix}{key}"
        if path in OPEN_DICTS or path.startswith("_"):
            continue
        if key not in schema:
            owners = _tasks_with_key(path)
            if owners and all(value == default for default in owners.values()):
                parent = cfg
                for part in path.split(".")[:-1]:
                    parent = parent[part]
                del parent[key]
        elif isinstance(schema[key], dict) and isinstance(value, dict):
            drop_other_tasks_defaults(cfg, value, schema[key], path + ".")


_ABSENT = object()


def signature_of(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def check_kwargs(obj: Any, kwargs: dict, path: str, cfg: dict, injected: set[str]) -> None:
    """Fail on kwargs the constructor does not take, and on required ones nobody gives."""
    sig = signature_of(obj)
    if sig is None:
        return
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not var_kw:
        for key in kwargs:
            if key not in params:
                close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.5)
                hint = f" Did you mean: {', '.join(close)}?" if close else \
                    f" It accepts: {', '.join(accepted) or 'no arguments'}."
                raise ConfigError(f"'{path}.{key}'{where(cfg, path + '.' + key)}: "
                                  f"{kwargs.get('type', getattr(obj, '__name__', obj))} has no "
                                  f"argument '{key}'.{hint}")
    from aicore.config_values import check_arg_values
    slot = "train.hooks" if path.startswith("train.hooks.") and path.count(".") == 2 else path
    check_arg_values(params, kwargs, path, slot, cfg, where)
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if name not in kwargs and name not in injected:
            raise ConfigError(f"'{path}'{where(cfg, path)}: missing required argument '{name}' "
                              f"for {getattr(obj, '__name__', obj)}")


def check_component(node: Any, registry: Registry, path: str, cfg: dict,
                    injected: set[str] = frozenset()) -> None:
    if not isinstance(node, dict):
        raise ConfigError(f"'{path}'{where(cfg, path)}: expected an object with a \"type\" key, "
                          f"got {json.dumps(node)}")
    if "type" not in node:
        raise ConfigError(f"'{path}'{where(cfg, path)}: missing \"type\". Choose one with "
                          f"`python main.py --list {registry.name}`")
    obj = registry.get(node["type"], where=f"{path}.type{where(cfg, path + '.type')}")
    kwargs = {k: v for k, v in node.items() if k != "type"}
    check_kwargs(obj, kwargs, path, cfg, set(injected))
    # nested components of the same family (a backbone inside a model, a loss inside a sum)
    for key, value in kwargs.items():
        if isinstance(value, dict) and "type" in value:
            check_component(value, registry, f"{path}.{key}", cfg)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict) and "type" in item:
                    check_component(item, registry, f"{path}.{key}.{i}", cfg)


def validate(cfg: DotMap) -> None:
    """Check the whole config before any work starts."""
    from aicore.config_values import check_values, rules_for
    from aicore.tasks.spec import apply_task_defaults, get_task, merged_defaults
    spec = get_task(cfg.toDict().get("task"), where(cfg.toDict(), "task"))
    apply_task_defaults(cfg)  # the task's own keys, under what the config sets
    schema = merged_defaults(DEFAULTS, spec)
    drop_other_tasks_defaults(cfg, cfg.toDict(), schema)
    raw = cfg.toDict()
    check_keys({k: v for k, v in raw.items() if not k.startswith("_")}, schema, "", raw)
    check_values(raw, where, rules_for(spec))
    if raw["mode"] not in MODES:
        close = difflib.get_close_matches(str(raw["mode"]), MODES, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"'mode' = {raw['mode']!r}{where(raw, 'mode')}: choose one of "
                          f"{', '.join(MODES)}.{hint}")
    data = raw["data"]
    if data["in_channels"] not in (1, 3):
        raise ConfigError(f"'data.in_channels' = {data['in_channels']}{where(raw, 'data.in_channels')}"
                          f": only 1 (grayscale) and 3 (colour) are supported")
    size = data["input_size"]
    if isinstance(size, int):
        data["input_size"] = cfg.data.input_size = [size, size]
    elif not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0
                                                                  for s in size)):
        raise ConfigError(f"'data.input_size'{where(raw, 'data.input_size')}: expected [H, W] "
                          f"in pixels, got {size!r}")
    if raw["train"]["amp"] not in (None, False, "bf16", "fp16"):
        raise ConfigError(f"'train.amp' = {raw['train']['amp']!r}{where(raw, 'train.amp')}: "
                          f"use null, \"bf16\" or \"fp16\"")
    if not isinstance(raw["train"]["accumulate"], int) or raw["train"]["accumulate"] < 1:
        raise ConfigError(f"'train.accumulate'{where(raw, 'train.accumulate')}: must be an "
                          f"integer >= 1")
    for split in ("train", "val", "test"):
        merged = {**data["dataset"], **data[split]["dataset"]}
        if not merged:
            if split == "test":
                continue
            raise ConfigError(f"'data.dataset' is missing: set it to e.g. "
                              f"{{\"type\": \"ClassificationDataset\"}} "
                              f"(`python main.py --list datasets`)")
        check_component(merged, DATASETS, f"data.{split}.dataset", raw, DATASET_INJECTED)
        for i, t in enumerate(data[split]["transforms"] or []):
            check_transform(t, f"data.{split}.transforms.{i}", raw)
    needs_training = raw["mode"] == "trainval" and not spec.gradient_free
    for key, registry, injected in COMPONENT_SLOTS:
        node = raw[key]
        if not node:
            if key == "model" or (needs_training and key in ("loss", "optimizer")):
                raise ConfigError(f"'{key}' is missing from the config: set {{\"type\": ...}} "
                                  f"(`python main.py --list {registry.name}`)")
            continue
        if key == "model":  # init_from is the framework's, not the model constructor's
            node = {k: v for k, v in node.items() if k != "init_from"}
        check_component(node, registry, key, raw, injected)
    for i, hook in enumerate(raw["train"]["hooks"]):
        check_component(hook, HOOKS, f"train.hooks.{i}", raw, {"priority"})
    if raw["train"]["trainer"] is not None:
        TRAINERS.get(raw["train"]["trainer"], where="train.trainer")
    check_weight_files(raw)


#: the built-in models' arguments that, given as text, name a local weights file (timm's
#: ``pretrained``: true downloads, a string is a path; torchvision's ``backbone_weights``)
WEIGHT_FILE_ARGS = {
    "pretrained": "give an existing local weights file (.pth/.safetensors), true (download "
                  "via timm) or false",
    "backbone_weights": "give an existing torchvision classification .pth, or null (weights "
                        "are never downloaded)",
}


def check_weight_files(raw: dict) -> None:
    """The weight files the model section points at exist, so a config that passes --check
    does not fail later on a missing file. Tested exactly as they are opened: ``Path(value)``,
    so a relative path is relative to the directory you run from (not the config file's).

    model.init_from is checked when training (the only mode that loads it); a text
    ``pretrained`` / ``backbone_weights`` of a built-in model in every mode (building the
    model opens it). Custom models' arguments are their own business and are not checked.
    """
    model = raw.get("model") or {}
    init = model.get("init_from")
    if init and raw["mode"] == "trainval":
        _need_file(raw, "model.init_from", str(init),
                   "point it at an existing checkpoint or state_dict (.pth), or remove "
                   "model.init_from to train from the model's own initialisation")

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        builtin = (isinstance(kind, str) and kind in MODELS
                   and str(getattr(MODELS.get(kind), "__module__", "")).startswith("aicore."))
        for key, value in node.items():
            if builtin and key in WEIGHT_FILE_ARGS and isinstance(value, str) and (
                    value or key == "pretrained"):
                _need_file(raw, f"{path}.{key}", value, WEIGHT_FILE_ARGS[key])
            elif isinstance(value, dict):
                walk(value, f"{path}.{key}")

    walk({k: v for k, v in model.items() if k != "init_from"}, "model")


def _need_file(raw: dict, key: str, value: str, fix: str) -> None:
    if not value.strip():  # Path("") is ".", a folder: say what is really wrong
        raise ConfigError(f"'{key}' = {value!r}{where(raw, key)}: an empty path; {fix}")
    path = Path(value)
    if path.is_file():
        return
    resolved = Path(os.path.abspath(path))
    what = "is a folder, not a file" if path.is_dir() else "file not found"
    relative = ("" if path.is_absolute()
                else f" (relative to the directory you run from, {Path.cwd()})")
    raise ConfigError(f"'{key}' = {value!r}{where(raw, key)}: {what}: {resolved}{relative}; {fix}")


def check_transform(node: Any, path: str, cfg: dict) -> None:
    if not isinstance(node, dict) or "type" not in node:
        raise ConfigError(f"'{path}'{where(cfg, path)}: a transform is {{\"type\": "
                          f"\"HorizontalFlip\", \"p\": 0.5}}; got {json.dumps(node)}")
    obj = TRANSFORMS.get(node["type"], where=f"{path}.type{where(cfg, path + '.type')}")
    kwargs = {k: v for k, v in node.items() if k not in ("type", "transforms")}
    check_kwargs(obj, kwargs, path, cfg, {"transforms"})
    for i, child in enumerate(node.get("transforms", []) or []):
        check_transform(child, f"{path}.transforms.{i}", cfg)


# --------------------------------------------------------------------------------------------
# Building


def build(node: dict | DotMap, registry: Registry, path: str, cfg: Any = None, **injected) -> Any:
    """Instantiate a ``{"type": ...}`` node; framework-supplied arguments are passed only when
    the constructor takes them and the config did not set them."""
    node = node.toDict() if isinstance(node, DotMap) else dict(node)
    node_type = node.pop("type")
    obj = registry.get(node_type, where=path)
    sig = signature_of(obj)
    if sig is not None:
        params = sig.parameters
        for name, value in injected.items():
            if name not in node and name in params:  # only names the constructor declares
                node[name] = value
    try:
        return obj(**node)
    except (AICoreError, OSError, KeyboardInterrupt):
        raise  # the component's own user-facing message; file system faults have theirs
    except Exception as e:
        # the arguments passed validation, so this came from inside the component's own code
        src = where(cfg, path) if cfg is not None else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        name = f"{registry.name} type {node_type!r} ({getattr(obj, '__qualname__', obj)} in " \
               f"{getattr(obj, '__module__', '?')})"
        raise ComponentError(f"'{path}'{src}: {name} raised inside its constructor: "
                             f"{type(e).__name__}{': ' + first if first else ''}. Check its "
                             f"arguments; if it is your own code, rerun with --debug for the "
                             f"traceback") from e
