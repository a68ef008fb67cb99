"""The run folder on disk: making output folders with clear errors, and the work_dir lock.

Two trainings started into one work_dir would interleave their logs, metrics and checkpoints.
The first one holds ``work_dir/.lock`` (created with O_EXCL, holding its pid, host and start
time); a second start is refused while that process is alive. A lock whose process is gone
(the run was killed) is stale and taken over, with one log line. A lock from another host
cannot be checked from here, so it is refused with the way to remove it.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from loguru import logger

from aicore.engine.checkpoint import describe_os_error
from aicore.errors import ConfigError

LOCK_NAME = ".lock"


def ensure_dir(path: str | os.PathLike, key: str) -> Path:
    """mkdir -p `path` and prove it is writable, or raise one ConfigError naming `key`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{key} = {path}: cannot write there ({describe_os_error(e)}); "
                          f"choose a writable folder with -o {key}=...") from None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkDirLock:
    """Held for the whole training run by rank 0; ``release`` removes it."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._check_existing()
                continue  # stale lock removed: try once more
            except OSError as e:
                raise ConfigError(f"work_dir = {self.path.parent}: cannot create the lock file "
                                  f"({describe_os_error(e)}); choose a writable folder with "
                                  f"-o work_dir=...") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
            self.held = True
            return
        raise ConfigError(f"{self.path}: another run keeps taking the lock; check for other "
                          f"trainings into this work_dir")

    def _check_existing(self) -> None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            # a lock file cut short (killed while writing it) names no live owner
            owner, pid, host = {}, None, socket.gethostname()
        if host != socket.gethostname():
            raise ConfigError(f"{self.path.parent} is in use by a training on host {host} (pid "
                              f"{pid}); wait for it, or, if that run is gone, delete {self.path}")
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise ConfigError(f"{self.path.parent} is in use by another training (pid {pid} on "
                              f"this host); wait for it to finish or choose another folder "
                              f"with -o work_dir=...")
        logger.warning(f"removing a stale lock {self.path} (pid {pid} is no longer running)")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise ConfigError(f"cannot remove the stale lock {self.path}: "
                                  f"{describe_os_error(e)}") from None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
