"""Model zoo: the smallest timm variant of every family in the seed 002 model list builds
through AICore's TimmClassifier (random init, 3 classes, 3 and 1 input channels) and trains:
a forward and backward pass with finite, non-zero gradients on the first convolution.

notes/classification_models.md holds the same families as a table; a test checks that every
timm name there exists in the installed timm.
"""
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from aicore.config import build
from aicore.registry import MODELS
from aicore.tasks import import_tasks
from tests.conftest import ROOT

import_tasks()

# family -> smallest timm variant. ShuffleNet is in the seed list but not in timm (see notes).
FAMILIES = {
    "resnet": "resnet10t",
    "resnext": "resnext26ts",
    "resnest": "resnest14d",
    "mobilenetv2": "mobilenetv2_035",
    "mobilenetv3": "mobilenetv3_small_050",
    "densenet": "densenet121",
    "vgg": "vgg11",
    "efficientnet": "efficientnet_b0",
    "efficientnetv2": "tf_efficientnetv2_b0",
    "mnasnet": "mnasnet_050",
    "vovnet": "ese_vovnet19b_slim_dw",
    "convnext": "convnext_atto",
    "ghostnet": "ghostnet_050",
    "repvgg": "repvgg_a0",
    "sequencer": "sequencer2d_s",
    "darknet": "darknet17",
    "cspnet": "cs3darknet_s",
    "dpn": "dpn48b",
    "repghost": "repghostnet_050",
}
NOTES = ROOT / "notes" / "classification_models.md"
SIZE = 32  # the smallest input every tested variant accepts (stems downsample up to 32x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("in_chans", [3, 1])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_builds_and_trains(family, in_chans):
    torch.manual_seed(0)
    name = FAMILIES[family]
    model = build({"type": "TimmClassifier", "name": name, "pretrained": False}, MODELS,
                  "model", num_classes=3, in_chans=in_chans)
    for layer in model.get_classifier().modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and not layer.weight.any():
            # an all-zero head (Sequencer) blocks every gradient to the body on the first pass
            nn.init.normal_(layer.weight, std=0.01)
    model.train()
    x = torch.randn(2, in_chans, SIZE, SIZE)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    conv = _first_conv(model)
    assert conv.in_channels == in_chans, f"{name}: stem not adapted to {in_chans} channel(s)"
    grad = conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all(), f"{name}: bad stem gradient"
    assert grad.abs().sum() > 0, f"{name}: no gradient reaches the stem"


def _table_rows() -> list[list[str]]:
    rows = []
    for line in NOTES.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("Family", "---"):
            rows.append(cells)
    return rows


def test_notes_table_matches_timm_and_this_test():
    rows = _table_rows()
    families = {r[0] for r in rows}
    assert set(FAMILIES) <= families and "shufflenet" in families
    for family, _seed_names, timm_names, tested in rows:
        names = re.findall(r"`([^`*]+)`", timm_names)
        for name in names:
            assert timm.is_model(name), f"{NOTES.name}: {family}: {name} is not a timm model"
        if family in FAMILIES:
            assert re.findall(r"`([^`]+)`", tested) == [FAMILIES[family]], family
        else:  # documented as missing from timm: the note must still be true
            assert not names and not timm.list_models(f"*{family}*"), (
                f"timm now has {family} models; add the family to FAMILIES and the notes")
