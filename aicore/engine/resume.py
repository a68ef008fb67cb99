"""Checkpoints and exact resume of a BaseTrainer: what a checkpoint holds, loading it back
(``train.resume``), what changes on a resume with another ``train.epochs`` or ``optimizer.lr``,
and the work_dir checks that keep an earlier run from being overwritten. The checkpoint format is
part of the contract (notes/contract.md, "Checkpoints"); notes/engine.md, "Exact resume", says
what a resume restores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from aicore import config as C
from aicore.data.io import write_text_atomic
from aicore.engine import checkpoint as ckpt_io
from aicore.engine import dist
from aicore.errors import CheckpointError, ConfigError


class CheckpointMixin:
    """The checkpoint half of BaseTrainer (mixed in; uses the trainer's model, optimizer,
    scheduler, scaler, hooks, history and best)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.bare_model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch + 1,
            "iter": self.global_step,
            "best": dict(self.best),
            "rng": ckpt_io.rng_state(),
            "config": C.to_dict(self.cfg),
            "classes": list(self.classes),
            "task": self.task,
            "history": list(self.history),
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks if h.state_dict()},
        }

    def resume_path(self) -> Path | None:
        resume = self.cfg.train.resume
        if not resume:
            return None
        path = self.work_dir / "checkpoints" / "last.pth" if resume is True else Path(str(resume))
        if not path.is_file():
            raise CheckpointError(f"train.resume: no checkpoint at {path}; run without "
                                  f"train.resume to start fresh")
        return path

    def load_resume(self, path: Path) -> None:
        ckpt = ckpt_io.load(path)
        if ckpt.get("classes") and list(ckpt["classes"]) != self.classes:
            raise CheckpointError(f"{path} was trained on classes {ckpt['classes']}, but the "
                                  f"dataset now has {self.classes}")
        ckpt_io.load_weights_strict(self.model, ckpt["model"], str(path))
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise CheckpointError(f"{path} has no EMA weights but train.ema is on; resume "
                                      f"with the same train.ema setting it was trained with")
            ckpt_io.load_weights_strict(self.ema.module, ckpt["ema"], str(path))
        try:
            if self.optimizer is not None:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler"):
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this config "
                                  f"({e}); resume with the optimizer it was trained with") from None
        self.start_epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["iter"])
        self.best = dict(ckpt.get("best") or {})
        self.history = list(ckpt.get("history") or [])
        hook_states = ckpt.get("hooks") or {}
        for hook in self.hooks:
            if type(hook).__name__ in hook_states:
                hook.load_state_dict(hook_states[type(hook).__name__])
        ckpt_io.set_rng_state(ckpt["rng"])
        self.apply_resume_changes(ckpt.get("config") or {})
        logger.info(f"resumed from {path} at epoch {self.start_epoch}, step {self.global_step}")

    def apply_resume_changes(self, old_cfg: dict) -> None:
        """Resuming with another train.epochs or optimizer.lr than the checkpoint's run.

        train.epochs: the schedule is the one for the new epoch count (it was built from this
        config), continued at the step reached; the lr moves to that schedule's value now.
        optimizer.lr: the new base lr is applied (every group scaled by new / old). Each change
        is logged in one line; see notes/engine.md, "Exact resume".
        """
        changes = []
        old_epochs = (old_cfg.get("train") or {}).get("epochs")
        if old_epochs is not None and int(old_epochs) != self.max_epoch:
            changes.append(f"train.epochs {old_epochs} -> {self.max_epoch}: the schedule is "
                           f"rebuilt for {self.max_epoch} epochs and continues at step "
                           f"{self.global_step}")
        old_lr = (old_cfg.get("optimizer") or {}).get("lr")
        new_lr = self.cfg.optimizer.get("lr") if self.optimizer is not None else None
        if old_lr and new_lr and float(old_lr) != float(new_lr):
            ratio = float(new_lr) / float(old_lr)
            for group in self.optimizer.param_groups:
                group["lr"] *= ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
            if self.scheduler is not None:
                self.scheduler.base_lrs = [b * ratio for b in self.scheduler.base_lrs]
            changes.append(f"optimizer.lr {old_lr} -> {new_lr}: the new lr is applied from here")
        if not changes:
            return
        lambdas = getattr(self.scheduler, "lr_lambdas", None)
        if lambdas is not None:  # LambdaLR: set the lr the (new) schedule gives at this step
            step = self.scheduler.last_epoch
            for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       lambdas):
                group["lr"] = base * fn(step)
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        logger.info("resume with a changed config: " + "; ".join(changes)
                    + (f" (lr now {self.current_lr():.3e})" if self.current_lr() else ""))

    def trim_metrics_log(self, epochs_done: int) -> None:
        """metrics.jsonl keeps only the epochs the checkpoint holds: a run killed between
        evaluation and checkpoint wrote records that its resume will write again. A fresh
        (overwrite) run starts an empty log."""
        path = self.work_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        if epochs_done > 0:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line).get("epoch", 0)) <= epochs_done:
                        kept.append(line)
                except (ValueError, AttributeError):
                    continue
        write_text_atomic(path, "".join(k + "\n" for k in kept))

    def check_work_dir(self, resume: bool) -> None:
        last = self.work_dir / "checkpoints" / "last.pth"
        if last.exists() and not resume and not self.cfg.train.overwrite:
            raise ConfigError(
                f"{self.work_dir} already holds a training run ({last}). To continue it set "
                f"-o train.resume=true; to keep it, choose another folder with -o work_dir=...; "
                f"to replace it, -o train.overwrite=true")

    def save_checkpoint(self, name: str, state: dict | None = None) -> Path:
        return self.save_checkpoints([name], state)[0]

    def save_checkpoints(self, names: list[str], state: dict | None = None,
                         then: Callable[[], None] | None = None,
                         background: bool = False) -> list[Path]:
        """Write the same state (default: the current one) under several names, all or none
        (see save_all_atomic), after any write in flight; `then` runs after a successful write.
        ``background``: on the checkpoint writer thread from a copy, while training goes on
        (aicore/engine/checkpoint_writer.py); a failed write raises at the next save or when
        training ends."""
        paths = [self.work_dir / "checkpoints" / name for name in names]
        if dist.is_main():
            state = state if state is not None else self.state_dict()
            self.checkpoint_writer.submit(state, paths, then, background=background)
        return paths

    def save_checkpoints_in_background(self, names: list[str],
                                       then: Callable[[], None] | None = None) -> list[Path]:
        """save_checkpoints on the writer thread while another epoch follows to overlap with;
        the last write (and a gradient-free fit's only one) is made in place, without a copy
        of the state."""
        more = self.needs_optimizer and self.epoch + 1 < self.max_epoch and not self.record.stop
        return self.save_checkpoints(names, then=then, background=more)

    def finish_checkpoint_writes(self, failing: bool = False) -> None:
        """Wait for the write in flight. Its error is raised, unless the run is already ending
        with another one (`failing`): then it is logged, and the first error is the one shown."""
        try:
            self.checkpoint_writer.wait()
        except Exception as e:  # noqa: BLE001 - CheckpointError, or a failed keep_last prune
            if not failing:
                raise
            logger.error(str(e))
