"""Checkpoint files: atomic writes, safe loading (weights_only=True), shape-aware fine-tuning."""
from __future__ import annotations

import errno
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger

from aicore.errors import CheckpointError


TMP_SUFFIX = ".tmp"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def _write_tmp(obj: dict, path: Path) -> Path:
    """torch.save into a new hidden file next to `path`, created with mode 0666 minus the
    umask (what any other file the user writes gets; mkstemp's 0600 would lock the host user
    out of a checkpoint written by root in a container)."""
    tmp = _tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _copy_tmp(src: Path, path: Path) -> Path:
    """A second name for an already written temp file: a hard link (no second serialisation
    or write of the same bytes; renaming either name later leaves the other intact), or a
    copy where the file system has no hard links."""
    tmp = _tmp_path(path)
    try:
        os.link(src, tmp)
    except OSError:
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return tmp


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves half a file."""
    save_all_atomic([(obj, path)])


def save_all_atomic(items: list[tuple[dict, str | os.PathLike]]) -> None:
    """Write several checkpoints so that either all of them are replaced or none is.

    Every file is first written in full to a temp file (the step that fails on a full disk);
    only when all are written are they renamed into place. last.pth and best.pth therefore
    always agree on which epoch is best. The same state object under several names is
    serialised once and linked (an improving epoch writes its 100 MB once, not twice).
    A failure raises CheckpointError naming the file.
    """
    done: list[tuple[Path, Path]] = []
    written: dict[int, Path] = {}  # id(obj) -> its temp file: one state is serialised once
    try:
        for obj, path in items:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                first = written.get(id(obj))
                tmp = _copy_tmp(first, path) if first is not None else _write_tmp(obj, path)
                written.setdefault(id(obj), tmp)
                done.append((tmp, path))
            except OSError as e:
                raise CheckpointError(f"cannot write checkpoint {path}: {describe_os_error(e)}; "
                                      f"the previous checkpoints in {path.parent} are unchanged")\
                    from None
            except RuntimeError as e:  # torch's writer wraps OSError in RuntimeError
                raise CheckpointError(f"cannot write checkpoint {path}: "
                                      f"{str(e).splitlines()[0]}; the previous checkpoints in "
                                      f"{path.parent} are unchanged (is the disk full?)") from None
        for tmp, path in done:
            os.replace(tmp, path)
        done = []
    finally:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)


def remove_orphaned_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files that a killed checkpoint write left behind (call while holding the
    work_dir lock, so no live run's temp file is touched)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(f".*.pth.*{TMP_SUFFIX}"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    if removed:
        logger.info(f"removed {len(removed)} temp file(s) left by an interrupted checkpoint "
                    f"write in {folder}")
    return removed


def describe_os_error(e: OSError) -> str:
    """An OSError in words a user can act on."""
    hints = {errno.ENOSPC: "the disk is full; free space or choose another folder",
             errno.EDQUOT: "the disk quota is exceeded; free space or choose another folder",
             errno.EROFS: "the file system is read-only; choose a writable folder",
             errno.EACCES: "permission denied; choose a folder you can write to",
             errno.EPERM: "operation not permitted; choose a folder you can write to",
             errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.EEXIST: "a file is in the way where a folder is needed",
             errno.EISDIR: "a folder is in the way where a file is needed"}
    return hints.get(e.errno, e.strerror or type(e).__name__)


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Train first, or point "
                              f"eval/demo/export.checkpoint (or train.resume) at an existing .pth")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-torch files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first}. It must be a file saved "
                              f"by AICore or a plain state_dict (.pth)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def state_dict_of(ckpt: dict, prefer_ema: bool) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint: EMA when asked for and present, else the raw model."""
    if prefer_ema and isinstance(ckpt.get("ema"), dict):
        return ckpt["ema"]
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if isinstance(ckpt.get("state_dict"), dict):
        return ckpt["state_dict"]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state_dict
    raise CheckpointError("checkpoint has no 'model' weights")


def strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_weights_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
    """Load for eval/demo/export/resume: every key must match in name and shape."""
    sd = strip_prefix(sd)
    resize_dynamic_buffers(model, sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            detail.append(f"{len(mismatched)} with other shapes (e.g. {mismatched[0]})")
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"checkpoint {path} does not fit the model this config builds: "
            f"{'; '.join(detail)}. It was probably trained with another model or number of "
            f"classes; use the config it was trained with (saved as config.json next to it), "
            f"or model.init_from to fine-tune from it")
    model.load_state_dict(sd, strict=True)


def resize_dynamic_buffers(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Give data-sized buffers the checkpoint's shape before loading.

    A module may list buffers whose size the training data decides (a PatchCore memory bank
    holds as many patches as its coreset kept) in a ``dynamic_buffers`` attribute; every other
    tensor must still match exactly.
    """
    for prefix, module in model.named_modules():
        for name in getattr(module, "dynamic_buffers", ()):
            key = f"{prefix}.{name}" if prefix else name
            old = module._buffers.get(name)
            if key in sd and old is not None and sd[key].dim() == old.dim():
                module._buffers[name] = torch.empty_like(sd[key], device=old.device)


def load_for_finetune(model: torch.nn.Module, path: str, input_norm: dict | None = None,
                      log: bool = True) -> dict[str, Any]:
    """Load what fits, report what does not (e.g. a new classifier head).

    A model may translate foreign checkpoint formats (the official YOLOX files, torchvision's
    COCO detectors) with ``adapt_state_dict(sd, input_norm) -> (sd, notes)``; ``input_norm``
    is the config's {"mean", "std"}. The report's "lines" are the log lines (written at once
    unless ``log`` is false; ``log_finetune_report`` writes them later, e.g. into train.log).
    """
    ckpt = load(path)
    # the weights that scored best (recorded by training), else EMA when present
    which = (ckpt.get("best") or {}).get("weights") or ("ema" if ckpt.get("ema") else "model")
    sd = strip_prefix(state_dict_of(ckpt, prefer_ema=which == "ema"))
    notes: list[str] = []
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        sd, notes = adapt(sd, input_norm)
    own = model.state_dict()
    loaded, skipped_shape, unexpected = {}, [], []
    for k, v in sd.items():
        if k not in own:
            unexpected.append(k)
        elif own[k].shape != v.shape:
            skipped_shape.append(f"{k}: {tuple(v.shape)} -> {tuple(own[k].shape)}")
        else:
            loaded[k] = v
    if not loaded:
        raise CheckpointError(f"model.init_from = {path}: no weight in it matches this model "
                              f"(none of {len(sd)} keys fit); is it a checkpoint of another "
                              f"architecture?")
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in own if k not in loaded]
    lines = [("INFO", f"init_from {path}: loaded {len(loaded)}/{len(own)} tensors "
                      f"({which} weights)")]
    lines += [("INFO", f"init_from: {n}") for n in notes]
    lines.append(("INFO", "init_from: loaded per part: " + ", ".join(
        f"{part} {n}/{total}" for part, n, total in _per_part(own, loaded))))
    lines += [("WARNING", f"init_from: skipped (shape differs) {k}; it keeps its initial "
                          f"values") for k in skipped_shape]
    if unexpected:
        lines.append(("WARNING", f"init_from: {len(unexpected)} keys not in this model, e.g. "
                                 f"{unexpected[:3]}"))
    if missing:
        lines.append(("WARNING", f"init_from: {len(missing)} tensors keep their initial values, "
                                 f"e.g. {missing[:3]}"))
    report = {"loaded": list(loaded), "skipped_shape": skipped_shape, "unexpected": unexpected,
              "missing": missing, "lines": lines}
    if log:
        log_finetune_report(report)
    return report


def _per_part(own: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]
              ) -> list[tuple[str, int, int]]:
    """(top-level module, tensors loaded, tensors it has), in the model's order; one level
    deeper when everything sits under one wrapper module (e.g. torchvision's ``net``)."""
    for depth in (1, 2):
        parts: dict[str, list[int]] = {}
        for k in own:
            counts = parts.setdefault(".".join(k.split(".")[:depth]), [0, 0])
            counts[0] += k in loaded
            counts[1] += 1
        if len(parts) > 1:
            break
    return [(p, n, total) for p, (n, total) in parts.items()]


def log_finetune_report(report: dict[str, Any]) -> None:
    for level, message in report.get("lines", []):
        logger.log(level, message)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors / plain types, so weights_only loading works."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
