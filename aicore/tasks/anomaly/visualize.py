"""Anomaly plots (ROC, score histogram, PRO curve) and heat-map overlays with defect contours."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from aicore.deploy.postprocess import is_defect
from aicore.engine.mpl import pyplot

OK_COLOR = (40, 200, 60)
NG_COLOR = (230, 40, 40)


def plot_roc(labels: np.ndarray, scores: np.ndarray, masks: np.ndarray | None,
             maps: np.ndarray | None, path: Path) -> None:
    """Image-level ROC, and pixel-level ROC when masks are given."""
    from sklearn.metrics import auc, roc_curve
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    fpr, tpr, _ = roc_curve(labels, scores)
    ax.plot(fpr, tpr, label=f"image (AUROC {auc(fpr, tpr):.3f})")
    if masks is not None and maps is not None and masks.any() and not masks.all():
        fpr, tpr, _ = roc_curve(masks.ravel(), maps.ravel())
        ax.plot(fpr, tpr, label=f"pixel (AUROC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_score_histogram(labels: np.ndarray, scores: np.ndarray, threshold: float,
                         path: Path) -> None:
    """Image scores of good and defective images, with the decision threshold: how much room
    there is on either side of it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bins = np.histogram_bin_edges(scores, bins=min(50, max(10, len(scores) // 3)))
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, color="tab:green", label="good")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, color="tab:red", label="defect")
    if math.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pro(fpr: np.ndarray, pro: np.ndarray, limit: float, score: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(fpr, pro, label=f"PRO (area to FPR {limit:g}, normalised: {score:.3f})")
    ax.axvline(limit, color="grey", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (pixels)")
    ax.set_ylabel("per-region overlap")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def overlay(rgb: np.ndarray, amap: np.ndarray, score: float, threshold: float,
            pixel_threshold: float, map_min: float, map_max: float) -> np.ndarray:
    """The image with its heat map blended in, the contour of pixels >= pixel_threshold, and an
    OK / NG banner (NG when score >= threshold)."""
    h, w = rgb.shape[:2]
    amap = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = (map_min, map_max) if math.isfinite(map_min) and map_max > map_min else \
        (float(amap.min()), float(amap.max()) + 1e-12)
    heat = np.clip((amap - lo) / (hi - lo), 0, 1)
    colored = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    # the colour is strongest where the map is: normal areas keep their look
    alpha = (0.1 + 0.5 * heat)[..., None]
    out = (rgb * (1 - alpha) + colored * alpha).astype(np.uint8)
    if out.shape[0] < 256:  # small images: upscale so contour and text stay readable
        scale = int(np.ceil(256 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        amap = cv2.resize(amap, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_LINEAR)
    ng = is_defect(score, threshold)
    if ng and math.isfinite(pixel_threshold):
        region = (amap >= pixel_threshold).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2, cv2.LINE_AA)
    text = f"{'NG' if ng else 'OK'}  score {score:.3g} / thr {threshold:.3g}"
    fs = max(0.45, out.shape[0] / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), NG_COLOR if ng else OK_COLOR, -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out
