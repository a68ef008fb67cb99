"""Types, ranges and choices of the plain config keys, checked before any work starts.

``RULES`` maps a dotted key to a ``Rule``; ``check_values`` walks the resolved config and fails
on the first value that breaks its rule with one line naming the key, what was expected, the
value and where it was set (config file or ``-o``). The same table feeds the JSON Schema
(``aicore/config_schema.py``), so the two cannot disagree.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from aicore.errors import ConfigError

EXPORT_FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class Rule:
    """One key's contract. kind: int | number | bool | str | choice | list | dict | any."""

    kind: str
    low: float | None = None  # inclusive unless low_open
    high: float | None = None
    low_open: bool = False
    nullable: bool = False
    choices: tuple = ()
    also: tuple = ()  # extra accepted literal values (e.g. -1 for batch_size)
    items: "Rule | None" = None  # list items
    length: int | None = None  # exact list length
    keys: dict = field(default_factory=dict)  # dict: allowed keys and their rules
    alt: tuple = ()  # other accepted kinds ("bool", "str") or Rules
    pattern: str | None = None  # str: full-match regex
    min_items: int = 0

    def describe(self) -> str:
        if self.kind in ("int", "number"):
            text = "an integer" if self.kind == "int" else "a number"
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}]"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {_fmt(self.low)}"
            elif self.high is not None:
                text += f" <= {_fmt(self.high)}"
        elif self.kind == "choice":
            text = "one of " + ", ".join(json.dumps(c) for c in self.choices)
        elif self.kind == "list":
            text = "a list"
            if self.length is not None:
                text = f"a list of {self.length}"
            if self.items is not None:
                text += f" items, each {self.items.describe()}"
            if self.min_items:
                text += f" (at least {self.min_items})"
        elif self.kind == "dict":
            text = "an object" + (f" with keys {', '.join(self.keys)}" if self.keys else "")
        else:
            text = {"bool": "true or false", "str": "a string", "any": "any value"}[self.kind]
            if self.pattern:
                text += f" like {self.pattern}"
        for a in self.alt:
            text += " or " + (a if isinstance(a, Rule) else Rule(a)).describe()
        for v in self.also:
            text += f" or {json.dumps(v)}"
        if self.nullable and self.kind != "choice":
            text += " or null"
        return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    return True


def find_problem(rule: Rule, value: Any, key: str) -> tuple[str, Rule | None, Any] | None:
    """(key, rule, value) of the first part of value that breaks rule, or None. A rule of None
    means an unknown key inside a dict with fixed keys."""
    if value is None and (rule.nullable or None in rule.choices):
        return None
    if value in rule.also and not isinstance(value, bool):
        return None
    if rule.kind == "choice":
        ok = any(value == c and type(value) is type(c) for c in rule.choices)
        return None if ok else (key, rule, value)
    if not _kind_ok(rule.kind, value):
        ok = any(find_problem(a, value, key) is None if isinstance(a, Rule) else _kind_ok(a, value)
                 for a in rule.alt)
        return None if ok else (key, rule, value)
    if rule.kind in ("int", "number"):
        if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
            return key, rule, value
        return (key, rule, value) if rule.high is not None and value > rule.high else None
    if rule.kind == "str" and rule.pattern:
        return (key, rule, value) if re.fullmatch(rule.pattern, value) is None else None
    if rule.kind == "list":
        if (rule.length is not None and len(value) != rule.length) or len(value) < rule.min_items:
            return key, rule, value
        for i, v in enumerate(value if rule.items is not None else []):
            if find_problem(rule.items, v, key) is not None:
                return key, rule, value
        return None
    if rule.kind == "dict" and rule.keys:
        for k, v in value.items():
            if k not in rule.keys:
                return f"{key}.{k}", None, rule
            found = find_problem(rule.keys[k], v, f"{key}.{k}")
            if found is not None:
                return found
    return None


def describe_problem(found: tuple[str, Rule | None, Any], where: str) -> str:
    key, rule, value = found
    if rule is None:  # unknown key in a fixed-key object; value is the parent rule
        return (f"'{key}'{where}: unknown key; {key.rsplit('.', 1)[0]} takes "
                f"{', '.join(value.keys)}")
    return f"'{key}' = {_show(value)}{where}: expected {rule.describe()}"


INT1 = Rule("int", low=1)
INT0 = Rule("int", low=0)
BOOL = Rule("bool")
PATH = Rule("str", nullable=True)
POS = Rule("number", low=0, low_open=True)
UNIT = Rule("number", low=0, high=1)

# Keys every task has; a task's own keys and their rules come with its TaskSpec
# (aicore/tasks/<task>/spec.py), see rules_for().
RULES: dict[str, Rule] = {
    "work_dir": PATH,
    "seed": Rule("int"),
    "custom_imports": Rule("list", items=Rule("str")),
    "data": Rule("dict"),
    "data.root": PATH,
    "data.in_channels": Rule("choice", choices=(1, 3)),
    "data.input_size": Rule("list", length=2, items=INT1, alt=(INT1,)),
    "data.batch_size": Rule("int", low=1, also=(-1,)),
    "data.val_batch_size": Rule("int", low=1, also=(-1,), nullable=True),
    "data.num_workers": INT0,
    "data.mean": Rule("list", items=UNIT, nullable=True, min_items=1),
    "data.std": Rule("list", items=POS, nullable=True, min_items=1),
    "data.auto_batch_fraction": Rule("number", low=0, high=1, low_open=True),
    "data.dataset": Rule("dict"),
    **{f"data.{s}": Rule("dict") for s in ("train", "val", "test")},
    **{f"data.{s}.dataset": Rule("dict") for s in ("train", "val", "test")},
    **{f"data.{s}.transforms": Rule("list", nullable=True) for s in ("train", "val", "test")},
    **{k: Rule("dict") for k in ("model", "loss", "optimizer", "scheduler", "evaluator",
                                  "train", "eval", "demo", "export")},
    "train.trainer": Rule("str", nullable=True),
    "train.epochs": INT1,
    "train.device": Rule("str", pattern=r"auto|cpu|cuda(:\d+)?"),
    "train.amp": Rule("choice", choices=(None, False, "bf16", "fp16")),
    "train.ema": Rule("dict", nullable=True, alt=("bool",),
                      keys={"decay": Rule("number", low=0, high=1, low_open=True),
                            "warmup": BOOL}),
    "train.accumulate": INT1,
    "train.clip_grad": Rule("number", low=0, low_open=True, nullable=True),
    "train.sync_bn": BOOL,
    "train.channels_last": BOOL,
    "train.resume": Rule("bool", alt=("str",)),
    "train.overwrite": BOOL,
    "train.eval_interval": INT1,
    "train.val_weights": Rule("choice", choices=("both", "ema")),
    "train.best_metric": Rule("str", nullable=True),
    "train.best_mode": Rule("choice", choices=("max", "min")),
    "train.log_interval": Rule("int", low=1, nullable=True),
    "train.progress": BOOL,
    "train.save_interval": INT0,
    "train.keep_last": Rule("int", low=1, nullable=True),
    "train.hooks": Rule("list", items=Rule("dict")),
    "train.deterministic": BOOL,
    "train.freeze_backbone_epochs": INT0,
    "train.save_train_batch": BOOL,
    "train.reuse_memory": BOOL,
    "eval.checkpoint": PATH,
    "eval.split": Rule("choice", choices=("train", "val", "test")),
    "eval.weights": Rule("choice", choices=("auto", "model", "ema")),
    "eval.out": PATH,
    "demo.source": PATH,
    "demo.checkpoint": PATH,
    "demo.weights": Rule("choice", choices=("auto", "model", "ema")),
    "demo.out": PATH,
    "demo.max_images": Rule("int", low=1, nullable=True),
    "demo.backend": Rule("choice", choices=("pytorch", "onnx")),
    "export.checkpoint": PATH,
    "export.weights": Rule("choice", choices=("auto", "model", "ema")),
    "export.opset": Rule("int", low=7, high=25),
    "export.formats": Rule("list", min_items=1, items=Rule("choice", choices=EXPORT_FORMATS)),
    "export.tolerance": POS,
    "export.parity_images": INT0,
    "export.out": PATH,
    "export.fuse_bn": BOOL,
    "export.half": BOOL,
    "export.half_tolerance": POS,
    "export.benchmark": BOOL,
    "export.benchmark_iters": INT1,
    "export.simplify": BOOL,
}


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rules_for(*specs: Any) -> dict[str, Rule]:
    """RULES plus the rules of the given tasks' own keys (TaskSpec.rules)."""
    out = dict(RULES)
    for spec in specs:
        out.update(spec.rules)
    return out


def check_values(raw: dict, where: Callable[[dict, str], str],
                 rules: dict[str, Rule] | None = None) -> None:
    """Fail on the first plain key whose value breaks its rule (RULES unless given)."""
    for key, rule in (RULES if rules is None else rules).items():
        node: Any = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = _MISSING
                break
            node = node[part]
        if node is _MISSING:
            continue
        found = find_problem(rule, node, key)
        if found is not None:
            raise ConfigError(describe_problem(found, where(raw, found[0])))


_MISSING = object()


# --------------------------------------------------------------------------------------------
# Component arguments: a value must fit the constructor's annotation (int, float, bool, str,
# optionally "| None"), and the arguments below must lie in their range.

ARG_RANGES: dict[str, dict[str, Rule]] = {
    "optimizer": {"lr": POS, "weight_decay": Rule("number", low=0),
                  "momentum": Rule("number", low=0, high=1), "eps": POS, "alpha": POS,
                  "betas": Rule("list", length=2, items=Rule("number", low=0, high=1)),
                  "backbone_lr_mult": Rule("number", low=0)},
    "scheduler": {"warmup_epochs": Rule("number", low=0), "warmup_ratio": UNIT,
                  "min_lr_ratio": UNIT, "gamma": POS, "power": POS, "step_epochs": POS,
                  "milestones": Rule("list", items=Rule("number", low=0))},
    "train.hooks": {"epochs": Rule("int", low=0), "interval": INT1, "patience": INT0,
                    "priority": Rule("int")},
}

_ANNOTATION_RULES = {"int": Rule("int"), "float": Rule("number"), "bool": BOOL,
                     "str": Rule("str")}


def annotation_rule(annotation: Any) -> Rule | None:
    """A Rule for a plain annotation ("int", "float | None", bool ...); None when unknown."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip() for p in text.split("|")]
    nullable = "None" in parts
    parts = [p for p in parts if p != "None"]
    if text.startswith("Optional[") and text.endswith("]"):
        parts, nullable = [text[9:-1]], True
    if len(parts) != 1 or parts[0] not in _ANNOTATION_RULES:
        return None
    base = _ANNOTATION_RULES[parts[0]]
    return Rule(base.kind, nullable=nullable)


def check_arg_values(params: dict, kwargs: dict, path: str, slot: str, raw: dict,
                     where: Callable[[dict, str], str]) -> None:
    """Check a component's given arguments against their annotations and ARG_RANGES[slot]."""
    ranges = ARG_RANGES.get(slot, {})
    for name, value in kwargs.items():
        if name == "type" or name not in params:
            continue
        if isinstance(value, dict) and "type" in value:
            continue  # a nested component, checked on its own
        if value is None and params[name].default is None:
            continue
        key = f"{path}.{name}"
        for rule in (annotation_rule(params[name].annotation), ranges.get(name)):
            if rule is None:
                continue
            found = find_problem(rule, value, key)
            if found is not None:
                raise ConfigError(describe_problem(found, where(raw, key)))
