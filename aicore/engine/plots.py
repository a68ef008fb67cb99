"""Training curves as PNG (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for k in ks:
            xs = [e for e, h in zip(epochs, history) if k in h]
            ax.plot(xs, [h[k] for h in history if k in h], marker="o", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_title(name[:-4].replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(out_dir / name)
    return written
