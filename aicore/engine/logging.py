"""Loguru set-up: rank 0 logs to the console and work_dir/train.log; other ranks only errors."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

from aicore.engine import dist

_FORMAT = "<green>{time:HH:mm:ss}</green> | <level>{level: <7}</level> | {message}"
_file_sink: int | None = None


def setup_console() -> None:
    global _file_sink
    logger.remove()
    _file_sink = None
    # called before the process group exists: torchrun's RANK tells which process this is
    rank = dist.rank() if dist.is_dist() else int(os.environ.get("RANK", 0))
    level = "INFO" if rank == 0 else "ERROR"
    if sys.stderr.isatty():
        # through tqdm.write, so a line never lands on the progress bar's frame
        logger.add(_above_bars, level=level, format=_FORMAT, colorize=True)
    else:
        logger.add(sys.stderr, level=level, format=_FORMAT, colorize=None)


def _above_bars(message: str) -> None:
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr, end="")


def add_file_sink(path: Path) -> None:
    global _file_sink
    remove_file_sink()
    _file_sink = logger.add(str(path), level="INFO", encoding="utf-8", errors="backslashreplace",
                            format="{time:YYYY-MM-DD HH:mm:ss} | {level: <7} | {message}")


def remove_file_sink() -> None:
    global _file_sink
    if _file_sink is not None:
        try:
            logger.remove(_file_sink)
        except ValueError:  # already removed by a logger.remove() elsewhere
            pass
        _file_sink = None
