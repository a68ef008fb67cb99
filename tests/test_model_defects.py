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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
