"""A run's results.png / results.csv and the confusion matrix plot (matplotlib, headless,
imported on the first plot: results.csv after every epoch does not pay for it)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aicore.engine.mpl import pyplot
from aicore.engine.record import is_number


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs = [int(h["epoch"]) for h in history if is_number(h.get(key))]
    return xs, [float(h[key]) for h in history if is_number(h.get(key))]


def lr_per_step(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(x in epochs, lr) for every optimizer step: the k-th of an epoch's n steps sits at
    epoch - 1 + k / n. An entry without ``lr_steps`` contributes its end-of-epoch lr."""
    xs: list[float] = []
    ys: list[float] = []
    for h in history:
        steps = h.get("lr_steps") or []
        if steps:
            n = len(steps)
            xs += [int(h["epoch"]) - 1 + (k + 1) / n for k in range(n)]
            ys += [float(v) for v in steps]
        elif is_number(h.get("lr")):
            xs.append(float(h["epoch"]))
            ys.append(float(h["lr"]))
    return xs, ys


def results_panels(history: list[dict[str, Any]],
                   metrics: Sequence[str] | None = None) -> list[tuple[str, dict[str, tuple]]]:
    """The panels of results.png as (title, {label: (xs, ys)}): one per training loss part,
    the validation loss, each of the task's main metrics (`metrics`; None = every numeric
    metric of the raw weights), and the lr at every optimizer step. EMA weights' values share
    their metric's panel."""
    keys = [k for k in dict.fromkeys(k for h in history for k in h) if k != "epoch"]
    panels: list[tuple[str, dict[str, tuple]]] = []
    for k in keys:
        if k.startswith("train_"):
            panels.append((f"train {k[6:]}", {"train": _series(history, k)}))
    if metrics is None:
        metrics = [k for k in keys if not k.startswith(("train_", "ema_")) and
                   k not in ("lr", "lr_steps", "val_loss")]
    for name, key in [("val loss", "val_loss")] + [(m, m) for m in metrics]:
        lines = {label: _series(history, k) for label, k in (("model", key),
                                                              ("ema", f"ema_{key}"))}
        lines = {label: xy for label, xy in lines.items() if xy[0]}
        if lines:
            panels.append((name, lines))
    xs, ys = lr_per_step(history)
    if xs:
        panels.append(("lr (every optimizer step)", {"lr": (xs, ys)}))
    return panels


def results_figure(history: list[dict[str, Any]], metrics: Sequence[str] | None = None):
    """One matplotlib figure, a panel per quantity, x in whole-number epochs."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    panels = results_panels(history, metrics)
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), dpi=100,
                             squeeze=False)
    last = max((int(h["epoch"]) for h in history), default=1)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, (xs, ys) in lines.items():
            per_step = len(xs) > len({int(math.ceil(x)) for x in xs})
            ax.plot(xs, ys, label=label, linestyle="--" if label == "ema" else "-",
                    marker=None if per_step else "o", ms=3, lw=1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0 if title.startswith("lr") else 0.8, last + 0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
    fig.tight_layout()
    return fig


def plot_results(history: list[dict[str, Any]], path: Path,
                 metrics: Sequence[str] | None = None) -> Path:
    fig = results_figure(history, metrics)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


def write_results_csv(history: list[dict[str, Any]], path: Path) -> Path:
    """One row per epoch: epoch, lr at its end, mean training losses, validation loss and
    metrics (``ema_*`` for the EMA weights); empty cells where an epoch was not evaluated."""
    import csv
    keys = [k for k in dict.fromkeys(k for h in history for k in h)
            if k != "lr_steps" and all(is_number(h[k]) for h in history if k in h)]
    first = [k for k in ("epoch", "lr") if k in keys]
    train = [k for k in keys if k.startswith("train_")]
    rest = sorted((k for k in keys if k not in first and k not in train),
                  key=lambda k: (k.startswith("ema_"), not k.endswith("val_loss")))
    columns = first + train + rest  # val_loss, metrics, then ema_val_loss, ema_ metrics
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for h in history:
            w.writerow(["" if h.get(k) is None else
                        (int(h[k]) if k == "epoch" else f"{float(h[k]):.6g}") for k in columns])
    os.replace(tmp, path)
    return path


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
    plt = pyplot()
    n = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(20, max(5.0, 2 + 0.5 * n))
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title("confusion matrix\n(counts; colour: share of the true class)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_confusion_matrix(cm: np.ndarray, names: Sequence[str], out: Path,
                          unit: str = "samples") -> None:
    """`confusion_matrix.csv` (rows true, columns predicted) and `confusion_matrix.png`."""
    import csv
    with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([f"true\\pred ({unit})"] + list(names))
        for name, row in zip(names, cm):
            w.writerow([name] + [int(v) for v in row])
    plot_confusion_matrix(cm, names, out / "confusion_matrix.png")
