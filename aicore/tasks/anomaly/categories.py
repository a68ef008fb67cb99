"""One config, many categories: each category of an MVTec-style root is its own run.

PaDiM and PatchCore model one product's normal appearance, so every category gets its own
model, checkpoint and reports in ``work_dir/<category>/`` (a normal single-category run folder:
``config.json`` there re-runs eval/demo/export of that category alone). The parent writes the
summary table over the categories:

    trainval: work_dir/summary.csv, work_dir/summary.md   (final validation metrics)
    eval:     <eval.out or work_dir/eval>/summary.csv, .md

``data.dataset.category`` picks the categories: ``"all"`` (every sub-folder with train/ or
test/), a list of names, or one name (a plain single run in work_dir). Left null, it means
"all" when data.root holds categories, and a single run when data.root is a category.
``{category}`` in eval/demo/export paths is replaced by each category's name.
"""
from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

from dotmap import DotMap
from loguru import logger

from aicore import config as C
from aicore.data.io import dataset_root
from aicore.engine import dist
from aicore.errors import CheckpointError, ConfigError
from aicore.tasks.anomaly.datasets import check_mask_sizes, is_category, \
    list_categories, scan

SUMMARY_METRICS = ("image_AUROC", "pixel_AUROC", "PRO", "F1_max", "threshold")
#: not averaged: a threshold is in one category's own score units
NOT_AVERAGED = {"threshold"}


def selected_categories(cfg: DotMap) -> list[str] | None:
    """The categories this config fans out to, or None when it is a single run."""
    choice = cfg.data.dataset.toDict().get("category") if cfg.data.dataset else None
    if isinstance(choice, str) and choice != "all":
        return None
    root = dataset_root(cfg.data.root, "anomaly")
    if choice in (None, "all") and is_category(root):  # data.root is one category's folder
        return None
    found = list_categories(root)
    if choice is None or choice == "all":
        if not found:
            raise ConfigError(f"data.root = {cfg.data.root} holds no categories: expected "
                              f"<root>/<category>/train/good/ (MVTec AD layout) or "
                              f"<root>/train/good/ for a single category")
        return found
    if not isinstance(choice, list) or not choice or \
            not all(isinstance(c, str) and c for c in choice):
        raise ConfigError(f"data.dataset.category = {choice!r}: use a category name, a list of "
                          f"names, or \"all\"")
    missing = [c for c in choice if c not in found]
    if missing:
        raise ConfigError(f"data.dataset.category: {', '.join(missing)} not found under "
                          f"{cfg.data.root}; its categories are: {', '.join(found) or 'none'}")
    if len(set(choice)) != len(choice):
        raise ConfigError(f"data.dataset.category lists a category twice: {choice}")
    return list(choice)


def _per_category(value: Any, category: str, key: str, several: bool) -> Any:
    """A path option for one category: '{category}' is filled in; an output folder without
    it gets a sub-folder; an input path without it is ambiguous."""
    if not value:
        return value
    text = str(value)
    if "{category}" in text:
        return text.replace("{category}", category)
    if key.endswith(".out"):
        return str(Path(text) / category)
    if several:
        raise ConfigError(f"{key} = {text!r} would be used for every category; put "
                          f"{{category}} in it (e.g. runs/x/{{category}}/checkpoints/best.pth) or "
                          f"run one category with -o data.dataset.category=NAME")
    return text


def sub_runs(cfg: DotMap, mode: str) -> list[tuple[str, DotMap]]:
    """(category, config) per category for a run of `mode`, each with work_dir/<category>;
    [] for a single run.
    Checks every category's layout up front, so a problem in the last category fails before
    the first one starts."""
    categories = selected_categories(cfg)
    if categories is None:
        return []
    if mode == "demo" and "{category}" not in str(cfg.demo.source or "{category}"):
        raise ConfigError(f"demo.source = {cfg.demo.source!r} with {len(categories)} categories: "
                          f"put {{category}} in it (e.g. data/mvtec/{{category}}/test) or pick "
                          f"one category with -o data.dataset.category=NAME")
    base = C.to_dict(cfg)
    runs = []
    for category in categories:
        sub = copy.deepcopy(base)
        sub["work_dir"] = str(Path(cfg.work_dir) / category)
        sub["data"]["dataset"]["category"] = category
        for section in ("eval", "demo", "export"):
            for key in ("checkpoint", "out") + (("source",) if section == "demo" else ()):
                sub[section][key] = _per_category(sub[section][key], category,
                                                  f"{section}.{key}", len(categories) > 1)
        sub["_origins"], sub["_file"] = cfg._origins, cfg._file
        runs.append((category, DotMap(sub, _dynamic=False)))
    if mode != "trainval":
        from aicore.engine.runners import checkpoint_path
        for category, sub in runs:
            path = checkpoint_path(sub, mode)
            if not path.is_file():
                raise CheckpointError(f"category {category}: no checkpoint at {path}; train it "
                                      f"first (mode trainval with this config) or set "
                                      f"{mode}.checkpoint with {{category}} in the path")
    else:
        root = Path(cfg.data.root)
        for category, sub in runs:
            for split in ("train", "val"):
                check_mask_sizes(scan(root / category, split))
            last = Path(sub.work_dir) / "checkpoints" / "last.pth"
            if last.exists() and not cfg.train.overwrite:
                raise ConfigError(
                    f"{sub.work_dir} already holds a training run ({last}). To keep it, choose "
                    f"another folder with -o work_dir=...; to replace it, -o "
                    f"train.overwrite=true")
    logger.info(f"{len(runs)} categories, one run each under {cfg.work_dir}: "
                f"{', '.join(categories)}")
    return runs


def write_summary(cfg: DotMap, mode: str, results: dict[str, dict[str, Any]]) -> Path | None:
    """summary.csv and summary.md: one row of metrics per category and their mean."""
    if mode not in ("trainval", "eval") or not dist.is_main():
        return None
    folder = Path(cfg.work_dir) if mode == "trainval" else \
        Path(cfg.eval.out or Path(cfg.work_dir) / "eval")
    folder.mkdir(parents=True, exist_ok=True)
    names = [m for m in SUMMARY_METRICS if any(m in r for r in results.values())]
    rows = [[c] + [r.get(m) for m in names] for c, r in results.items()]
    mean = ["mean"] + [_mean([r.get(m) for r in results.values()])
                       if m not in NOT_AVERAGED else None for m in names]
    with open(folder / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["category"] + names)
        for row in rows + [mean]:
            w.writerow([_fmt(v) for v in row])
    lines = ["| category | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for row in rows + [mean]:
        cells = [_fmt(v) for v in row]
        if row is mean:
            cells = [f"**{c}**" if c else "" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps(
        {"categories": results, "mean": dict(zip(names, mean[1:]))}, indent=2), encoding="utf-8")
    logger.info("summary over categories:\n" + "\n".join(lines))
    logger.info(f"wrote {folder / 'summary.md'} and summary.csv")
    return folder / "summary.md"


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(nums) / len(nums) if nums and len(nums) == len(values) else None


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)
