"""Write the built-in synthetic data sets in the layouts of notes/contract.md.

    python -m aicore.tools.demo_data OUT [--task all|classification|...] [--layout ...]

Each task's generator lives in its task folder (``aicore/tasks/<task>/synthetic.py``) and writes
``OUT/<task>``; the quickstart configs read from ``data/demo/<task>``.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# task -> module with `make(out: Path, **options) -> Path`
GENERATORS = {
    "classification": "aicore.tasks.classification.synthetic",
    "segmentation": "aicore.tasks.segmentation.synthetic",
    "detection": "aicore.tasks.detection.synthetic",
    "anomaly": "aicore.tasks.anomaly.synthetic",
}


# task -> the layouts its generator writes (the first is the default)
LAYOUTS = {
    "classification": ("folder", "list"),
    "segmentation": ("index", "palette"),
    "detection": ("yolo", "coco"),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", help="output folder; each task goes to OUT/<task>")
    p.add_argument("--task", default="all", choices=["all", *GENERATORS])
    p.add_argument("--layout", default=None,
                   help="with one --task: " + "; ".join(f"{t}: {' | '.join(v)}"
                                                         for t, v in LAYOUTS.items()))
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--size", type=int, default=None, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.layout and a.layout not in LAYOUTS.get(a.task, ()):
        where = (f"--task {a.task} has the layouts {' | '.join(LAYOUTS[a.task])}"
                 if a.task in LAYOUTS else
                 f"--layout needs one --task of {', '.join(LAYOUTS)}")
        p.error(f"--layout {a.layout}: {where}")
    tasks = list(GENERATORS) if a.task == "all" else [a.task]
    for task in tasks:
        options = {"channels": a.channels, "seed": a.seed}
        if a.size:
            options["size"] = a.size
        if a.layout:
            options["layout"] = a.layout
        root = importlib.import_module(GENERATORS[task]).make(Path(a.out) / task, **options)
        print(f"wrote {root}")


if __name__ == "__main__":
    main()
