"""The Data page: a dataset root checked before any training.

Two parts: every image file under the root is decoded (size, channels, bit depth; a file that
fails is named), counted per split and class folder; then the task's dataset classes are
built for each split through the task trainer, which runs the same checks training runs
(layouts, labels that do not fit, masks of the wrong size, ...); their error, if any, is
shown verbatim. Samples of the first split that builds are drawn with their ground truth
(class name, mask overlay, boxes, defect contour).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from aicore.data.io import is_image

TASKS = ("classification", "segmentation", "detection", "anomaly")
MAX_FILES = 20000


def scan_files(root: Path) -> dict[str, Any]:
    groups: Counter = Counter()
    sizes: Counter = Counter()
    channels: Counter = Counter()
    corrupt: list[str] = []
    samples: list[dict[str, str]] = []
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if not is_image(p):
                continue
            n += 1
            if n > MAX_FILES:
                break
            rel = p.relative_to(root).as_posix()
            buf = np.fromfile(str(p), dtype=np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
            if img is None:
                corrupt.append(rel)
                continue
            parts = rel.split("/")
            groups["/".join(parts[:2]) if len(parts) > 2 else (parts[0] if len(parts) > 1
                                                                 else ".")] += 1
            sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
            channels[f"{1 if img.ndim == 2 else img.shape[2]} ch, {img.dtype}"] += 1
            if len(samples) < 24 and (len(samples) < 4 or n % 7 == 0):
                samples.append({"path": rel, "label": "/".join(parts[:-1]) or "."})
    return {"images": min(n, MAX_FILES), "truncated": n > MAX_FILES,
            "groups": dict(sorted(groups.items())), "sizes": dict(sizes.most_common(10)),
            "channels": dict(channels), "corrupt": corrupt, "samples": samples}


def dataset_checks(root: Path, task: str, configs_dir: Path,
                   built: list | None = None) -> list[dict[str, Any]]:
    """Build each split's dataset with the task's base config and this root; the datasets
    that built are appended to `built` as (split, dataset)."""
    from aicore import config as C
    from aicore.errors import AICoreError
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import apply_task_defaults, trainer_class
    import_tasks()
    base = configs_dir / "_base_" / f"{task}.json"
    out = []
    try:
        # only the data sections matter here: the base config has no model, so it is not
        # validated as a whole
        cfg = C.load_config(base, [f"data.root={root}", "data.num_workers=0"])
        apply_task_defaults(cfg)
        trainer = trainer_class(cfg)(cfg)
    except (AICoreError, OSError) as e:
        return [{"split": "config", "ok": False, "message": f"error: {e}"}]
    for split in ("train", "val", "test"):
        try:
            ds = trainer.build_dataset(split, train=False)
            classes = list(getattr(ds, "classes", []) or [])
            out.append({"split": split, "ok": True, "samples": len(ds), "classes": classes})
            if built is not None:
                built.append((split, ds))
        except AICoreError as e:
            out.append({"split": split, "ok": False, "message": f"error: {e}"})
        except Exception as e:  # a dataset class failing on odd data: show it, don't crash
            out.append({"split": split, "ok": False,
                        "message": f"error: {type(e).__name__}: {e}"})
    return out


def report(root: Path, task: str, configs_dir: Path) -> dict[str, Any]:
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {', '.join(TASKS)}")
    from aicore.app.annotate import data_samples
    built: list = []
    checks = dataset_checks(root, task, configs_dir, built)
    drawn = {"split": built[0][0], "samples": data_samples(task, built[0][1])} if built \
        else None
    return {"root": str(root), "task": task, "files": scan_files(root), "datasets": checks,
            "drawn": drawn}
