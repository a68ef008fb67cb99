"""Anomaly inputs are resized in float (no rounding to whole grey levels), the same way in the
data set, the trainer's preprocess (demo) and the deploy runtime (from the export manifest).

The rounding of an 8-bit resize is up to half a grey level of noise on every pixel; PaDiM's
Mahalanobis distance scores it, and it was the whole pixel AUROC / PRO gap to anomalib 2.7.0
(which resizes float tensors) in benchmarks/peers/anomaly.py. A shrinking resize is also
antialiased as torchvision's Resize(antialias=True) is: OpenCV's bilinear shrink reads two input
pixels per output pixel, and on the 128 -> 64 px textures that aliasing was PatchCore's pixel
AUROC / PRO gap to anomalib (benchmarks/peers/patchcore_same_bank.py).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aicore.config import load_config
from aicore.deploy.preprocess import prepare
from aicore.engine.protocol import make_protocol
from aicore.tasks.anomaly.datasets import MVTecDataset
from aicore.tasks.anomaly.trainer import AnomalyTrainer

REPO = Path(__file__).resolve().parents[1]


def _category(root: Path, rng: np.random.Generator) -> np.ndarray:
    """One category with two training images and one good + one defect test image, 40x52 px."""
    imgs = rng.integers(0, 256, (4, 40, 52, 3), dtype=np.uint8)
    for i, sub in enumerate(["train/good/a.png", "train/good/b.png", "test/good/c.png",
                             "test/crack/d.png"]):
        (root / sub).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / sub), imgs[i][:, :, ::-1])
    mask = np.zeros((40, 52), np.uint8)
    mask[5:15, 10:30] = 255
    (root / "ground_truth/crack").mkdir(parents=True)
    cv2.imwrite(str(root / "ground_truth/crack/d_mask.png"), mask)
    return imgs


@pytest.mark.parametrize("size", [(96, 80), (24, 30)])  # enlarged / shrunk, aspect changed
def test_dataset_demo_and_deploy_resize_alike_in_float(tmp_path, size):
    imgs = _category(tmp_path / "cat", np.random.default_rng(0))
    ds = MVTecDataset(str(tmp_path), "test", category="cat", input_size=size)
    good = [i for i, s in enumerate(ds.samples) if s[0].endswith("c.png")]
    assert len(good) == 1
    x_ds = ds[good[0]][0].numpy()

    cfg = load_config(REPO / "configs" / "anomaly" / "quickstart.json",
                      [f"data.input_size=[{size[0]},{size[1]}]", f"data.root={tmp_path}",
                       f"work_dir={tmp_path / 'run'}"])
    trainer = AnomalyTrainer(cfg)
    protocol = make_protocol(trainer)
    x_demo = protocol.preprocess(np.ascontiguousarray(imgs[2][:, :, ::-1]))[0].numpy()  # BGR in
    spec = protocol.deploy_preprocess()
    assert spec["resize_precision"] == "float32" and spec["resize_antialias"] is True
    x_deploy, _ = prepare(np.ascontiguousarray(imgs[2][:, :, ::-1]), spec)

    # the reference: bilinear on float tensors (half-pixel centres), antialiased when it
    # shrinks, as torchvision's Resize(antialias=True) does
    t = torch.from_numpy(imgs[2]).permute(2, 0, 1)[None].float() / 255
    ref = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(spec["mean"]).view(3, 1, 1)
    std = torch.tensor(spec["std"]).view(3, 1, 1)
    ref = ((ref - mean) / std).numpy()

    assert x_ds.shape == x_demo.shape == x_deploy.shape == (3, *size)
    np.testing.assert_allclose(x_ds, ref, atol=2e-5)
    np.testing.assert_array_equal(x_ds, x_demo)
    np.testing.assert_array_equal(x_demo, x_deploy)
    # an 8-bit resize would differ: values rounded to whole levels (up to 0.5/255/std)
    rounded = cv2.resize(imgs[2], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    x_rounded = ((rounded.astype(np.float32) / 255 - spec["mean"]) / spec["std"]).transpose(2, 0, 1)
    assert np.abs(x_rounded - ref).max() > 1e-3
    if size[0] < imgs.shape[1]:  # OpenCV's two-tap shrink in float: aliased, far off
        plain = cv2.resize(imgs[2].astype(np.float32) / 255, (size[1], size[0]),
                           interpolation=cv2.INTER_LINEAR)
        x_plain = ((plain - spec["mean"]) / spec["std"]).transpose(2, 0, 1)
        assert np.abs(x_plain - ref).max() > 0.1
    # a manifest written before the antialiased resize keeps OpenCV's resize
    old = {k: v for k, v in spec.items() if k != "resize_antialias"}
    x_old, _ = prepare(np.ascontiguousarray(imgs[2][:, :, ::-1]), old)
    assert np.array_equal(x_old, x_deploy) == (size[0] > imgs.shape[1])


def test_other_tasks_keep_the_8bit_resize():
    from aicore.engine.trainer import BaseTrainer
    assert BaseTrainer.resize_in_float is False and BaseTrainer.resize_antialias is False
    spec = {"channels": 3, "size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1],
            "resize": "stretch"}
    img = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x, _ = prepare(img, spec)
    rounded = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (8, 8),
                         interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(x, rounded.transpose(2, 0, 1) / 255, atol=1e-6)
