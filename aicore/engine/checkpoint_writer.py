"""Checkpoints written off the training loop's critical path.

An epoch's checkpoint (model, EMA, optimizer state: 90 MB for a resnet18 with SGD momentum)
costs its serialisation, the write and an fsync; done in the loop, the next epoch waited for
all of it (0.2 s per epoch on the classification peer benchmark, benchmarks/RESULTS.md).
``CheckpointWriter.submit`` copies the state's tensors (a memory copy: the model and optimizer
go on changing in place) and hands the copy to one worker thread, which writes it with
``checkpoint.save_all_atomic`` (temp files, then renames: all names or none) while training
continues (the last epoch's write, with nothing left to overlap, is made in place, without the
copy). One write is in flight at a time: the next submit, and ``wait``, first finish the
previous one and raise its error, so a failed write (a full disk) still stops the run with the
same ``CheckpointError``, at the latest one epoch later, and never leaves last.pth and
best.pth disagreeing. The trainer waits before ``after_train`` and whenever training ends, so
every file is complete when a run returns or fails.
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Callable

from aicore.engine import checkpoint as ckpt_io


class CheckpointWriter:
    """Writes one checkpoint set at a time on a background thread (see the module doc)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict, paths: list[Path], then: Callable[[], None] | None = None,
               background: bool = True) -> None:
        """Write `state` under every name in `paths` (all or none), then run `then` (e.g.
        pruning old epoch_N.pth) after a successful write: on the writer thread, or here with
        ``background=False`` (no copy, so no second copy of a large state in memory; for a
        write that nothing would overlap, such as the last epoch's)."""
        self.wait()
        if not background:
            ckpt_io.save_all_atomic([(state, p) for p in paths])
            if then is not None:
                then()
            return
        snapshot = copy.deepcopy(state)  # tensors cloned: training changes them in place

        def work() -> None:
            try:
                ckpt_io.save_all_atomic([(snapshot, p) for p in paths])
                if then is not None:
                    then()
            except BaseException as e:  # handed to the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=work, name="aicore-checkpoint", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Finish the write in flight; raise its error, if it had one."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
