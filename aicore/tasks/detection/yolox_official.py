"""The official YOLOX checkpoints (Megvii-BaseDetection/YOLOX: yolox_nano/tiny/s/m/l/x.pth) as a
starting point for our YOLOX.

The released files are ``{"model": state_dict, ...}`` of ``YOLOX(YOLOPAFPN, YOLOXHead)``. The
layers are the same as ours, in the same order, under other names:

    backbone.backbone.<stage>...   -> backbone.<stage>...      (CSPDarknet)
    backbone.lateral_conv0 / C3_p4 / reduce_conv1 / C3_p3 / bu_conv2 / C3_n3 / bu_conv1 / C3_n4
                                   -> neck.lateral5 / td4 / reduce4 / td3 / down3 / bu4 / down4 / bu5
    head.cls_convs / reg_convs     -> head.cls_towers / reg_towers
    CSPLayer's bottleneck list "m" -> "blocks"

One real difference is the input. The official models (since YOLOX 0.2) take BGR pixels in
0..255 without normalisation, ours take RGB ``(pixel / 255 - mean) / std``. The stem is a
space-to-depth step followed by a bias-free convolution and BatchNorm, so the conversion folds
exactly into the stem: the convolution's input channels are reordered and scaled by
``255 * std``, and the constant ``255 * mean`` term moves into the BatchNorm's running mean.
(Only the stem output's one-pixel border differs, where zero padding means another colour in
the two conventions.) A 1-channel model gets the three colour filters summed.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

#: official PAFPN module name -> ours (under "neck.")
NECK_NAMES = {"lateral_conv0": "lateral5", "C3_p4": "td4", "reduce_conv1": "reduce4",
              "C3_p3": "td3", "bu_conv2": "down3", "C3_n3": "bu4", "bu_conv1": "down4",
              "C3_n4": "bu5"}
HEAD_NAMES = {"cls_convs": "cls_towers", "reg_convs": "reg_towers"}
#: the two tensors the input conversion rewrites (names in our model)
STEM_CONV = "backbone.stem.conv.conv.weight"
STEM_BN_MEAN = "backbone.stem.conv.bn.running_mean"


def is_official(sd: dict[str, torch.Tensor]) -> bool:
    """True for an official YOLOX state dict (its backbone sits under backbone.backbone.)."""
    return any(k.startswith("backbone.backbone.") for k in sd) and \
        not any(k.startswith("neck.") for k in sd)


def rename(key: str) -> str | None:
    """Official key -> our key (None for a key with no counterpart)."""
    key = re.sub(r"\.m\.(\d+)\.", r".blocks.\1.", key)
    if key.startswith("backbone.backbone."):
        return "backbone." + key[len("backbone.backbone."):]
    if key.startswith("backbone."):
        first, _, rest = key[len("backbone."):].partition(".")
        return f"neck.{NECK_NAMES[first]}.{rest}" if first in NECK_NAMES else None
    if key.startswith("head."):
        first, _, rest = key[len("head."):].partition(".")
        return f"head.{HEAD_NAMES.get(first, first)}.{rest}"
    return None


def fold_input_convention(weight: torch.Tensor, running_mean: torch.Tensor, in_chans: int,
                          mean: Sequence[float], std: Sequence[float]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite the official stem (conv weight (O, 4*3, k, k) over BGR 0..255 space-to-depth
    groups, and its BatchNorm running mean) for our input: ``in_chans`` channels of
    ``(pixel / 255 - mean) / std``, RGB order for 3 channels, grey repeated for 1.

    With x ours and v = 255 * (x * std + mean) the official pixel value, conv(v) = conv'(x) + k
    per output channel, where conv' has weights scaled by 255 * std and k = sum of the weights
    times 255 * mean; BatchNorm(conv(v)) = BatchNorm'(conv'(x)) with running_mean' = rm - k.
    """
    out_ch, groups_x3, kh, kw = weight.shape
    groups = groups_x3 // 3
    w = weight.double().reshape(out_ch, groups, 3, kh, kw)
    mean_t = torch.tensor(list(mean), dtype=torch.float64)
    std_t = torch.tensor(list(std), dtype=torch.float64)
    if in_chans == 3:
        w_rgb = w.flip(2)  # BGR filter order -> RGB
        new = w_rgb * (255.0 * std_t)[None, None, :, None, None]
        offset = (w_rgb * (255.0 * mean_t)[None, None, :, None, None]).sum((1, 2, 3, 4))
    else:  # grey: the same value feeds all three colour filters
        summed = w.sum(2, keepdim=True)
        new = summed * 255.0 * std_t[0]
        offset = (summed * 255.0 * mean_t[0]).sum((1, 2, 3, 4))
    new = new.reshape(out_ch, groups * in_chans, kh, kw).to(weight.dtype)
    return new, (running_mean.double() - offset).to(running_mean.dtype)


def convert(sd: dict[str, torch.Tensor], in_chans: int, input_norm: dict | None
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official state dict -> ours, plus notes for the log. Keys without a counterpart are
    kept under their official name (the loader reports them as not in this model)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        new = rename(k)
        out[new if new is not None else k] = v
    notes = [f"official YOLOX checkpoint: {len(sd)} tensors renamed to this model's layers"]
    mean = (input_norm or {}).get("mean")
    std = (input_norm or {}).get("std")
    if STEM_CONV in out and STEM_BN_MEAN in out and mean is not None and std is not None \
            and out[STEM_CONV].shape[1] % 3 == 0 and in_chans in (1, 3):
        out[STEM_CONV], out[STEM_BN_MEAN] = fold_input_convention(
            out[STEM_CONV], out[STEM_BN_MEAN], in_chans, mean, std)
        notes.append(f"stem converted from the official BGR 0..255 input to this config's "
                     f"{'RGB' if in_chans == 3 else 'grey'} (pixel / 255 - mean) / std")
    cls_key = "head.cls_preds.0.weight"
    if cls_key in out:
        notes.append(f"the checkpoint's head predicts {out[cls_key].shape[0]} classes")
    return out, notes
