"""JSON Schema (draft 2020-12) of the whole config, for editors: ``python main.py --schema``.

Plain keys come from DEFAULTS and the rules in aicore/config_values.py, plus each registered
task's own keys and rules (its TaskSpec: aicore/tasks/<task>/spec.py); each ``{"type": ...}``
slot lists the registered names and, per name, the constructor's arguments (from its
signature: names always, JSON types where the annotation is plain). What the framework
supplies itself (num_classes, model, ...) is left out.
"""
from __future__ import annotations

import inspect
from typing import Any

from aicore.config import (COMPONENT_SLOTS, DATASET_INJECTED, DEFAULTS, MODES, OPEN_DICTS,
                           signature_of)
from aicore.config_values import ARG_RANGES, Rule, annotation_rule, rules_for
from aicore.registry import DATASETS, HOOKS, TASKS, Registry
from aicore.tasks.spec import merged_defaults

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def rule_schema(rule: Rule) -> dict:
    """A Rule as JSON Schema."""
    if rule.kind == "choice":
        out: dict = {"enum": list(rule.choices)}
    elif rule.kind in ("int", "number"):
        out = {"type": "integer" if rule.kind == "int" else "number"}
        if rule.low is not None:
            out["exclusiveMinimum" if rule.low_open else "minimum"] = rule.low
        if rule.high is not None:
            out["maximum"] = rule.high
    elif rule.kind == "str":
        out = {"type": "string"}
        if rule.pattern:
            out["pattern"] = f"^(?:{rule.pattern})$"
    elif rule.kind == "bool":
        out = {"type": "boolean"}
    elif rule.kind == "list":
        out = {"type": "array"}
        if rule.items is not None:
            out["items"] = rule_schema(rule.items)
        if rule.length is not None:
            out["minItems"] = out["maxItems"] = rule.length
        elif rule.min_items:
            out["minItems"] = rule.min_items
    elif rule.kind == "dict":
        out = {"type": "object"}
        if rule.keys:
            out["properties"] = {k: rule_schema(r) for k, r in rule.keys.items()}
            out["additionalProperties"] = False
    else:
        out = {}
    extra = [rule_schema(a) if isinstance(a, Rule) else rule_schema(Rule(a)) for a in rule.alt]
    extra += [{"const": v} for v in rule.also]
    if rule.nullable and rule.kind != "choice":
        extra.append({"type": "null"})
    return {"anyOf": [out, *extra]} if extra else out


def _arguments(obj: Any, injected: set[str], ranges: dict) -> tuple[dict, bool, list[str]]:
    """(properties, takes **kwargs, required) of a constructor."""
    sig = signature_of(obj)
    if sig is None:
        return {}, True, []
    props, var_kw, required = {}, False, []
    for name, p in sig.parameters.items():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        if name in ("self", *injected) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        rule = annotation_rule(p.annotation)
        schema: dict = {}
        if rule is not None:
            schema = rule_schema(rule)
            if p.default is None:
                schema = {"anyOf": [schema, {"type": "null"}]}
        if name in ranges:
            schema = {"allOf": [schema, rule_schema(ranges[name])]} if schema else \
                rule_schema(ranges[name])
        if p.default is not inspect.Parameter.empty and _jsonable(p.default):
            schema["default"] = p.default if not isinstance(p.default, tuple) else list(p.default)
        props[name] = schema
        if p.default is inspect.Parameter.empty:
            required.append(name)
    return props, var_kw, required


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_jsonable(v) for v in value))


def component_schema(registry: Registry, injected: set[str] = frozenset(),
                     partial: bool = False, ranges: dict | None = None) -> dict:
    """A ``{"type": NAME, ...}`` node of one registry. partial: the node may omit "type" and
    required arguments (dataset kwargs split between data.dataset and data.<split>.dataset)."""
    names = sorted(registry._entries)
    out: dict = {"type": "object", "properties": {"type": {"type": "string", "enum": names}}}
    if not partial:
        out["required"] = ["type"]
    branches = []
    for name in names:
        props, var_kw, required = _arguments(registry._entries[name], set(injected), ranges or {})
        then: dict = {"properties": {"type": True, **props}}
        if not var_kw and not partial:
            then["additionalProperties"] = False
        if required and not partial:
            then["required"] = required
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                         "then": then})
    if branches:
        out["allOf"] = branches
    return out


def _section(defaults: dict, prefix: str, slots: dict, rules: dict[str, Rule]) -> dict:
    props = {}
    for key, value in defaults.items():
        path = prefix + key
        if path in slots:
            props[key] = slots[path]
        elif isinstance(value, dict) and value and path not in OPEN_DICTS:
            props[key] = _section(value, path + ".", slots, rules)
        elif path in rules:
            props[key] = rule_schema(rules[path])
        else:
            props[key] = {}
        if not isinstance(value, dict) and _jsonable(value) and "$ref" not in props[key]:
            props[key] = {**props[key], "default": value}
    return {"type": "object", "properties": props, "additionalProperties": False}


def build_schema() -> dict:
    """The whole config's schema; call after the tasks and custom modules are imported.
    Transforms are named, not enumerated: every albumentations class is one. A key one task
    owns is described for every config (the check at start-up refuses it for other tasks)."""
    nested = {"type": "array", "items": {"$ref": "#/$defs/transform"}}
    transform = {"type": "object", "required": ["type"],
                 "properties": {"type": {"type": "string"}, "transforms": nested}}
    dataset = component_schema(DATASETS, DATASET_INJECTED, partial=True)
    slots: dict[str, dict] = {
        "data.dataset": {"$ref": "#/$defs/dataset"},
        "train.hooks": {"type": "array", "items": component_schema(HOOKS, {"priority"},
                                                                 ranges=ARG_RANGES["train.hooks"])},
    }
    for split in ("train", "val", "test"):
        slots[f"data.{split}.dataset"] = {"$ref": "#/$defs/dataset"}
        slots[f"data.{split}.transforms"] = {
            "anyOf": [{"type": "array", "items": {"$ref": "#/$defs/transform"}}, {"type": "null"}]}
    for key, registry, injected in COMPONENT_SLOTS:
        node = component_schema(registry, injected | ({"init_from"} if key == "model" else set()),
                                ranges=ARG_RANGES.get(key))
        if key == "model":
            node["properties"]["init_from"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
            for branch in node.get("allOf", []):
                branch["then"]["properties"]["init_from"] = True
        slots[key] = {"anyOf": [node, {"type": "object", "maxProperties": 0}]}
    specs = [TASKS.get(name) for name in TASKS.names()]
    schema = _section(merged_defaults(DEFAULTS, *specs), "", slots, rules_for(*specs))
    schema["properties"]["task"] = {"enum": TASKS.names(), "default": DEFAULTS["task"]}
    schema["properties"]["mode"] = {"enum": list(MODES), "default": DEFAULTS["mode"]}
    schema["properties"]["_base_"] = {"anyOf": [{"type": "string"},
                                                {"type": "array", "items": {"type": "string"}}]}
    schema.update({"$schema": DIALECT, "title": "AICore config",
                   "$defs": {"transform": transform, "dataset": dataset}})
    return schema
