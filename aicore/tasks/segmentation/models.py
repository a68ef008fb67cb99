"""Segmentation models: every segmentation-models-pytorch architecture with any of its encoders.

    {"type": "SMPModel", "arch": "Unet", "encoder_name": "resnet18", "encoder_weights": null}

``in_chans`` and ``num_classes`` come from the framework (data.in_channels, labels.txt) and
become smp's ``in_channels`` and ``classes``; other keys (encoder_depth, decoder_channels, ...)
go to the architecture's constructor unchanged.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from loguru import logger
from torch import nn

from aicore.errors import ConfigError
from aicore.registry import MODELS


def architectures() -> dict[str, type]:
    """Architecture name (as smp spells the class, e.g. "UnetPlusPlus") -> class."""
    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def _check_encoder(name: str) -> None:
    if name.startswith("tu-"):  # any timm backbone with features_only support
        import timm
        if timm.is_model(name[3:]):
            return
        close = difflib.get_close_matches(name[3:], timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join('tu-' + c for c in close)}?" if close else ""
        raise ConfigError(f"model.encoder_name = {name!r}: {name[3:]!r} is not a timm model."
                          f"{hint}")
    names = smp.encoders.get_encoder_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.encoder_name = {name!r} is not an smp encoder.{hint} Use one of "
                          f"smp.encoders.get_encoder_names(), or 'tu-<timm model name>' for any "
                          f"timm backbone (e.g. tu-resnet10t)")


def _load_encoder_file(model: nn.Module, path: Path) -> None:
    """Load a local encoder weights file (plain state_dict, or a full smp model's)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model.encoder_weights = {str(path)!r}: cannot load it "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    # a "tu-" encoder wraps the timm model as .model: a plain timm state dict gets the prefix
    if own and all(k.startswith("model.") for k in own) and \
            not any(k.startswith("model.") for k in sd):
        sd = {f"model.{k}": v for k, v in sd.items()}
    fit, adapted = {}, []
    for k, v in sd.items():
        if k not in own:
            continue
        if own[k].shape != v.shape and v.dim() == 4 and own[k].shape[0] == v.shape[0] and \
                own[k].shape[2:] == v.shape[2:] and v.shape[1] == 3:
            # the first convolution of a 1- or N-channel model, as timm adapts it
            from timm.models import adapt_input_conv
            v = adapt_input_conv(int(own[k].shape[1]), v)
            adapted.append(k)
        if own[k].shape == v.shape:
            fit[k] = v
    if not fit:
        raise ConfigError(f"model.encoder_weights = {str(path)!r}: none of its {len(sd)} tensors "
                          f"fit the encoder {type(model.encoder).__name__}; is it for another "
                          f"encoder_name?")
    model.encoder.load_state_dict(fit, strict=False)
    logger.info(f"encoder weights from {path}: loaded {len(fit)}/{len(own)} tensors"
                + (f" ({', '.join(adapted)} adapted to {own[adapted[0]].shape[1]} input channels)"
                   if adapted else ""))
    rest = [k for k in own if k not in fit and not k.endswith("num_batches_tracked")]
    if rest:
        logger.warning(f"encoder weights: {len(rest)} encoder tensors keep their initial values, "
                       f"e.g. {rest[:3]}")


@MODELS.register("SMPModel")
def smp_model(arch: str, num_classes: int, in_chans: int = 3, encoder_name: str = "resnet34",
              encoder_weights: str | None = None, **kwargs: Any) -> nn.Module:
    """A segmentation_models_pytorch model; its forward returns (N, num_classes, H, W) logits.

    encoder_weights: null (random init), a name smp downloads (e.g. "imagenet"; needs network
    access), or a path to a local encoder weights file.
    """
    archs = architectures()
    lookup = {k.lower(): k for k in archs}
    if arch.lower() not in lookup:
        close = difflib.get_close_matches(arch, list(archs), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.arch = {arch!r} is not a segmentation-models-pytorch "
                          f"architecture.{hint} Choose from {', '.join(sorted(archs))}")
    cls = archs[lookup[arch.lower()]]
    _check_encoder(encoder_name)
    local = None
    if encoder_weights is not None and Path(str(encoder_weights)).suffix in (".pth", ".pt", ".bin",
                                                                             ".safetensors"):
        local = Path(str(encoder_weights))
        if not local.is_file():
            raise ConfigError(f"model.encoder_weights = {encoder_weights!r}: file not found")
        encoder_weights = None
    try:
        model = cls(encoder_name=encoder_name, encoder_weights=encoder_weights,
                    in_channels=in_chans, classes=num_classes, **kwargs)
    except TypeError as e:
        # smp passes keys its architecture does not declare on to the encoder, so a typo shows
        # up as the encoder's complaint; name the key and the architecture's own arguments
        own = [n for n in inspect.signature(cls).parameters if n != "kwargs"]
        stray = [k for k in kwargs if k not in own]
        hint = ""
        if stray:
            close = difflib.get_close_matches(stray[0], own, n=3, cutoff=0.5)
            hint = (f" 'model.{stray[0]}' is not an argument of {cls.__name__}"
                    + (f"; did you mean: {', '.join(close)}?" if close else
                       f"; it takes: {', '.join(own)}."))
        raise ConfigError(f"model: smp {cls.__name__} rejected an argument ({e}).{hint}") from None
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as e:
        if encoder_weights is not None:
            raise ConfigError(f"model.encoder_weights = {encoder_weights!r}: could not get the "
                              f"weights for {encoder_name!r} ({type(e).__name__}: "
                              f"{str(e)[:200]}). Without network access use null (random init) "
                              f"or the path of a local weights file") from None
        raise ConfigError(f"model: cannot build smp {cls.__name__} with encoder "
                          f"{encoder_name!r}: {type(e).__name__}: {str(e)[:300]}") from None
    if local is not None:
        _load_encoder_file(model, local)
    return model


def required_stride(model: nn.Module) -> int:
    """The factor input height and width must be divisible by (1 when any size works)."""
    model = getattr(model, "module", model)
    if getattr(model, "requires_divisible_input_shape", False):
        return int(getattr(getattr(model, "encoder", None), "output_stride", 32) or 1)
    return 1


def logits_of(output: Any) -> torch.Tensor:
    """smp models with aux_params return (mask logits, class logits); keep the mask logits."""
    return output[0] if isinstance(output, (tuple, list)) else output
