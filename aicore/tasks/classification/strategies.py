"""Classification training strategies: mixup/cutmix, knowledge distillation (soft targets plus
feature-based AT or SP), and R-Drop. Each is switched on by one `train.*` config key and plugs
into ClassificationTrainer.forward_loss."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from loguru import logger
from torch import nn

from aicore.engine import checkpoint as ckpt_io
from aicore.errors import ConfigError


def _options(node: Any, key: str, allowed: dict[str, Any]) -> dict[str, Any]:
    """A `train.<key>` block as a dict with defaults, rejecting unknown keys by name."""
    given = node.toDict() if hasattr(node, "toDict") else dict(node or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"train.{key}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return {**allowed, **given}


# ------------------------------------------------------------------------------------------
# mixup / cutmix


def build_mixup(node: Any, num_classes: int):
    """timm's Mixup (batch mode). Its label smoothing replaces the loss's."""
    from timm.data import Mixup
    o = _options(node, "mixup", {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0,
                                 "switch_prob": 0.5, "label_smoothing": 0.1})
    if o["mixup_alpha"] <= 0 and o["cutmix_alpha"] <= 0:
        raise ConfigError("train.mixup: set mixup_alpha or cutmix_alpha above 0")
    return Mixup(mixup_alpha=o["mixup_alpha"], cutmix_alpha=o["cutmix_alpha"], prob=o["prob"],
                 switch_prob=o["switch_prob"], mode="batch",
                 label_smoothing=o["label_smoothing"], num_classes=num_classes)


def apply_mixup(mixup, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Mixed images and soft targets; an odd-sized batch (timm needs pairs) is left unmixed but
    still gets soft, smoothed targets so the loss sees one target format."""
    if images.shape[0] % 2 == 0:
        return mixup(images, labels)
    smoothing = mixup.label_smoothing
    t = F.one_hot(labels, num_classes).float()
    return images, t * (1 - smoothing) + smoothing / num_classes


def preview_mixup(mixup, images: torch.Tensor, labels: torch.Tensor, classes: list[str]
                  ) -> tuple[torch.Tensor, list[str]]:
    """The batch as forward_loss mixes it, for train_batch.jpg: mixed images and each soft
    target's two largest classes ("cat .62 / dog .38"). The random state is restored, so
    drawing the preview changes nothing in training."""
    state = ckpt_io.rng_state()
    try:
        mixed, targets = apply_mixup(mixup, images.clone(), labels.clone(), len(classes))
    finally:
        ckpt_io.set_rng_state(state)
    names = []
    for t in targets:
        top = t.topk(min(2, len(classes)))
        parts = [f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(top.values, top.indices)
                 if float(v) >= 0.1]
        names.append("\n".join(parts))
    return mixed, names


# ------------------------------------------------------------------------------------------
# knowledge distillation


class FeatureTap:
    """Records a timm model's `forward_features` output during its normal forward.

    Patching the instance (not the class) keeps DDP's forward path intact, so gradient
    synchronisation still works, and adds nothing to the state_dict.
    """

    def __init__(self, model: nn.Module) -> None:
        if not hasattr(model, "forward_features"):
            raise ConfigError(f"train.distill.feature needs a model with forward_features() "
                              f"(any timm model); {type(model).__name__} has none")
        self.value: torch.Tensor | None = None
        original = model.forward_features

        def tapped(x: torch.Tensor) -> torch.Tensor:
            self.value = original(x)
            return self.value
        model.forward_features = tapped


class StageTaps:
    """Forward hooks on a timm model's feature stages (feature_info): each stage's latest
    output by reduction (stride), so AT can fall back to a stage with spatial extent when
    forward_features is 1x1 (a small input through a deep CNN)."""

    def __init__(self, model: nn.Module) -> None:
        self.outputs: dict[int, torch.Tensor] = {}
        for entry in getattr(model, "feature_info", None) or []:
            try:
                module = model.get_submodule(entry["module"])
            except (AttributeError, KeyError, TypeError):
                continue
            module.register_forward_hook(self._recorder(int(entry["reduction"])))

    def _recorder(self, reduction: int):
        def record(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                self.outputs[reduction] = output
        return record


def spatial_pair(fs: torch.Tensor, ft: torch.Tensor, taps_s: StageTaps | None,
                 taps_t: StageTaps | None) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """The student/teacher feature pair AT compares: the final features when either has
    spatial extent, else the deepest stage (same stride in both) that has; the stride used
    (None for the final features)."""
    if fs.dim() != 4 or ft.dim() != 4 or fs.shape[-2:].numel() > 1 or ft.shape[-2:].numel() > 1:
        return fs, ft, None
    if taps_s is not None and taps_t is not None:
        for r in sorted(set(taps_s.outputs) & set(taps_t.outputs), reverse=True):
            s, t = taps_s.outputs[r], taps_t.outputs[r]
            if s.shape[-2:].numel() > 1 and t.shape[-2:].numel() > 1:
                return s, t, r
    return fs, ft, None


def attention_transfer(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: match normalised spatial attention maps (mean of squared
    activations over channels); the smaller map sets the resolution."""
    def att(f: torch.Tensor, size) -> torch.Tensor:
        a = f.float().pow(2).mean(1, keepdim=True)
        if a.shape[-2:] != size:
            a = F.adaptive_avg_pool2d(a, size)
        return F.normalize(a.flatten(1), dim=1)
    size = tuple(min(a, b) for a, b in zip(fs.shape[-2:], ft.shape[-2:]))
    return (att(fs, size) - att(ft, size)).pow(2).mean()


def similarity_preserving(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Tung & Mori 2019: samples that look alike to the teacher should look alike to the
    student; compares row-normalised batch similarity matrices (any feature shapes)."""
    def gram(f: torch.Tensor) -> torch.Tensor:
        f = f.float().flatten(1)
        return F.normalize(f @ f.t(), dim=1)
    b = fs.shape[0]
    return (gram(fs) - gram(ft)).pow(2).sum() / (b * b)


FEATURE_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "AT": attention_transfer, "SP": similarity_preserving}


class Distiller:
    """Soft-target KD (Hinton et al. 2015) from a trained AICore checkpoint, optionally with a
    feature loss. loss = (1 - alpha) * task + alpha * T^2 * KL(teacher_T || student_T)
    + feature_weight * feature_loss."""

    def __init__(self, node: Any, student: nn.Module, classes: list[str], build_model,
                 device: torch.device) -> None:
        o = _options(node, "distill", {"checkpoint": None, "teacher": None, "temperature": 4.0,
                                       "alpha": 0.5, "feature": None, "feature_weight": None})
        if not o["checkpoint"]:
            raise ConfigError("train.distill.checkpoint: path of the teacher's AICore checkpoint "
                              "(e.g. runs/teacher/checkpoints/best.pth)")
        ckpt = ckpt_io.load(o["checkpoint"])
        if list(ckpt.get("classes") or []) != list(classes):
            raise ConfigError(f"train.distill.checkpoint {o['checkpoint']}: the teacher was "
                              f"trained on classes {ckpt.get('classes')}, this run has {classes}")
        teacher_cfg = o["teacher"] or (ckpt.get("config") or {}).get("model")
        if not teacher_cfg:
            raise ConfigError("train.distill.teacher: the checkpoint records no model config; "
                              "give the teacher's model as {\"type\": ..., ...}")
        self.teacher = build_model(teacher_cfg)
        weights = "ema" if (ckpt.get("best") or {}).get("weights") == "ema" else "model"
        ckpt_io.load_weights_strict(self.teacher, ckpt_io.state_dict_of(ckpt, weights == "ema"),
                                    o["checkpoint"])
        self.teacher.to(device).eval().requires_grad_(False)
        self.T, self.alpha = float(o["temperature"]), float(o["alpha"])
        self.feature = o["feature"]
        if self.feature is not None and self.feature not in FEATURE_LOSSES:
            raise ConfigError(f"train.distill.feature = {self.feature!r}: use null, "
                              f"{' or '.join(repr(k) for k in FEATURE_LOSSES)}")
        self.feature_weight = float(o["feature_weight"] if o["feature_weight"] is not None
                                    else {"AT": 1000.0, "SP": 3000.0}.get(self.feature, 0.0))
        self.student_tap = FeatureTap(student) if self.feature else None
        # AT on 1x1 features compares two normalised scalars, always equal: a zero loss
        self.stage_taps = (StageTaps(student), StageTaps(self.teacher)) \
            if self.feature == "AT" else None
        self._at_stride: int | None | bool = False  # stride AT used last (False: not yet)
        logger.info(f"distilling from {o['checkpoint']} ({teacher_cfg.get('type')} "
                    f"{teacher_cfg.get('name', '')}, {weights} weights), T={self.T}, "
                    f"alpha={self.alpha}, feature={self.feature or 'none'}")

    def losses(self, images: torch.Tensor, student_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.feature:
                feats_t = self.teacher.forward_features(images)
                logits_t = self.teacher.forward_head(feats_t)
            else:
                logits_t = self.teacher(images)
        T = self.T
        kd = F.kl_div(F.log_softmax(student_logits.float() / T, dim=1),
                      F.log_softmax(logits_t.float() / T, dim=1), reduction="batchmean",
                      log_target=True) * T * T
        out = {"kd": kd}
        if self.feature:
            fs, ft = self.student_tap.value, feats_t
            if self.stage_taps is not None:
                fs, ft, stride = spatial_pair(fs, ft, *self.stage_taps)
                self._note_at_stage(stride, fs)
            out["feat"] = FEATURE_LOSSES[self.feature](fs, ft)
        return out

    def _note_at_stage(self, stride: int | None, fs: torch.Tensor) -> None:
        if stride == self._at_stride:
            return
        self._at_stride = stride
        if stride is not None:
            logger.info(f"train.distill.feature AT: the final features are 1x1 at this input "
                        f"size (a zero loss); matching attention at the stride-{stride} stage "
                        f"({fs.shape[-2]}x{fs.shape[-1]}) instead")
        elif fs.dim() == 4 and fs.shape[-2:].numel() == 1:
            logger.warning("train.distill.feature AT: the features are 1x1 and no earlier stage "
                           "of both models has spatial extent, so the AT loss is 0; use "
                           "feature SP or a larger data.input_size")

    def combine(self, task: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = (1 - self.alpha) * task + self.alpha * parts["kd"]
        if "feat" in parts:
            loss = loss + self.feature_weight * parts["feat"]
        return loss


# ------------------------------------------------------------------------------------------
# R-Drop


def rdrop_consistency(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Liang et al. 2021: symmetric KL between two dropout passes of the same batch."""
    la, lb = F.log_softmax(logits_a.float(), 1), F.log_softmax(logits_b.float(), 1)
    return 0.5 * (F.kl_div(la, lb, reduction="batchmean", log_target=True)
                  + F.kl_div(lb, la, reduction="batchmean", log_target=True))


def has_dropout(model: nn.Module) -> bool:
    """True if the model has any stochastic layer for R-Drop to compare passes of."""
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            return True
        if type(m).__name__ == "DropPath" and getattr(m, "drop_prob", 0) > 0:
            return True
    return float(getattr(model, "drop_rate", 0) or 0) > 0
