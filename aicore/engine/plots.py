"""Training curves as PNG (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict[str, float]], out_dir: Path) -> list[Path]:
    epochs = [h["epoch"] for h in history]
    keys = sorted({k for h in history for k in h if k != "epoch"})
    groups = {
        "loss_curve.png": [k for k in keys if k.startswith("train_")],
        "lr_curve.png": [k for k in keys if k == "lr"],
        "metric_curve.png": [k for k in keys if not k.startswith("train_") and k != "lr"],
    }
    written = []
    for name, ks in groups.items():
        if not ks:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        # one colour per metric; EMA weights' values dashed in the same colour
        bases = sorted({k[4:] if k.startswith("ema_") else k for k in ks})
        colours = plt.get_cmap("tab20" if len(bases) > 10 else "tab10")
        for k in ks:
            ema = k.startswith("ema_")
            xs = [e for e, h in zip(epochs, history) if k in h]
            ax.plot(xs, [h[k] for h in history if k in h], marker="o", ms=3, label=k,
                    linestyle="--" if ema else "-",
                    color=colours(bases.index(k[4:] if ema else k) % colours.N))
        ax.set_xlabel("epoch")
        ax.set_title(name[:-4].replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(ks) > 6 else 1)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
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
