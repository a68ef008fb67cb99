"""Fixes for model-side defects: Grad-CAM's default layer at small inputs, AT distillation on
1x1 features, train_batch.jpg after mixup/cutmix, demo videos at the source's frame rate and
demo.max_images taking a spread of the source."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch

from tests.conftest import cls_config, run_cli, write_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------
# Grad-CAM


def test_default_cam_layer_has_spatial_extent():
    """resnet10t at 32 px: layer4 is 1x1, so its Grad-CAM is one value (blank); the default
    moves to layer3, whose map varies over the image."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from aicore.tasks.classification.cam import target_layer
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    assert target_layer(model, None) is model.layer4  # without a sample: the last stage
    layer = target_layer(model, None, x)
    assert layer is model.layer3

    def cam_std(layer):
        with pgc.GradCAM(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * 2)
        return float(np.std(maps))
    assert cam_std(model.layer4) == 0.0 and cam_std(layer) > 0.01
    # at a larger input the last stage has extent again and stays the default
    assert target_layer(model, None, torch.randn(1, 3, 96, 96)) is model.layer4


# ------------------------------------------------------------------------------------------
# AT distillation


def test_at_distillation_falls_back_to_a_stage_with_extent(tmp_path):
    """At 32 px both resnets end 1x1: AT on the final features is exactly 0, so the distiller
    matches the deepest stage both have with extent (stride 16, 2x2) and the loss trains it."""
    from aicore.tasks.classification.strategies import Distiller, attention_transfer
    torch.manual_seed(0)
    classes = ["a", "b", "c"]
    teacher = timm.create_model("resnet18", num_classes=3)
    path = tmp_path / "teacher.pth"
    torch.save({"classes": classes, "model": teacher.state_dict(),
                "config": {"model": {"type": "TimmClassifier", "name": "resnet18"}}}, path)
    student = timm.create_model("resnet10t", num_classes=3)
    distiller = Distiller({"checkpoint": str(path), "feature": "AT"}, student, classes,
                          lambda node: timm.create_model(node["name"], num_classes=3),
                          torch.device("cpu"))
    x = torch.randn(4, 3, 32, 32)
    logits = student(x)
    parts = distiller.losses(x, logits)
    final_s = distiller.student_tap.value
    assert final_s.shape[-2:] == (1, 1)
    assert float(attention_transfer(final_s, teacher.forward_features(x))) == 0.0
    assert distiller._at_stride == 16 and float(parts["feat"]) > 0
    parts["feat"].backward()
    assert sum(float(p.grad.abs().sum()) for p in student.layer3.parameters()
               if p.grad is not None) > 0


# ------------------------------------------------------------------------------------------
# train_batch.jpg after mixup / cutmix


def test_train_batch_preview_is_the_mixed_batch():
    import random

    from aicore.tasks.classification.strategies import build_mixup, preview_mixup
    mixup = build_mixup({"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "prob": 1.0}, 3)
    images = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(4)])
    labels = torch.tensor([0, 1, 2, 0])
    np.random.seed(0)  # timm draws the cutmix box from numpy's global stream
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    torch_before = torch.get_rng_state()
    mixed, names = preview_mixup(mixup, images, labels, ["cat", "dog", "fox"])
    # cutmix pasted a box of the flipped batch: image 0 now holds pixels of image 3
    assert set(mixed[0].unique().tolist()) == {0.0, 3.0}
    assert not torch.equal(mixed, images)
    assert names[1].splitlines()[0].startswith(("dog", "fox")) and "\n" in names[1]
    assert {n.split()[0] for n in names[1].splitlines()} == {"dog", "fox"}
    # drawing the preview leaves every random stream where it was
    assert (np.random.get_state()[1] == np_before).all() and random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)


# ------------------------------------------------------------------------------------------
# demo: video frame rate, max_images


def test_demo_video_keeps_the_source_frame_rate(trained_run, tmp_path):
    from aicore.data.sources import video_fps
    cfg, _ = trained_run
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 8, (48, 48))
    for i in range(3):
        w.write(np.full((48, 48, 3), 40 * i, np.uint8))
    w.release()
    assert video_fps(video) == pytest.approx(8)
    out = tmp_path / "demo"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={video}",
                   "-o", f"demo.out={out}") == 0
    cap = cv2.VideoCapture(str(out / "clip_pred.mp4"))
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(8)
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    finally:
        cap.release()


def _touch_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:03d}.png")
        cv2.imwrite(str(paths[-1]), np.full((8, 8, 3), i, np.uint8))
    return paths


def test_max_images_takes_a_spread_of_the_source(tmp_path):
    """A capped folder source covers every sub-folder (class; good and each defect type),
    evenly spaced within each, instead of the first N files of the first class."""
    from aicore.data.sources import iter_sources
    good = _touch_images(tmp_path / "test" / "good", 10)
    crack = _touch_images(tmp_path / "test" / "crack", 3)
    hole = _touch_images(tmp_path / "test" / "hole", 1)
    names = [n for n, _, _ in iter_sources(str(tmp_path / "test"), 6)]
    # one per sub-folder in turn: crack 3 (all it has), good 2 (its first and last), hole 1
    assert names == sorted(map(str, [*crack, good[0], good[9], hole[0]]))
    assert len([n for n, _, _ in iter_sources(str(tmp_path / "test"), 9)
                if "/good/" in n]) == 5  # 9 = crack 3 + hole 1 + good 5
    flat = _touch_images(tmp_path / "flat", 9)
    assert [n for n, _, _ in iter_sources(str(tmp_path / "flat"), 3)] == \
        [str(flat[0]), str(flat[4]), str(flat[8])]
    assert len(list(iter_sources(str(tmp_path / "test")))) == 14  # no cap: everything
