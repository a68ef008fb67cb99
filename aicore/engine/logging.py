"""Loguru set-up: rank 0 logs to the console and work_dir/train.log; other ranks only errors."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

from aicore.engine import dist

_FORMAT = "<green>{time:HH:mm:ss}</green> | <level>{level: <7}</level> | {message}"
_FILE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss} | {level: <7} | {message}"  # loguru adds "\n"
_file_sink: int | None = None
#: lines logged before train.log exists (see start_buffer), and the sink collecting them
_buffer: list[str] = []
_buffer_sink: int | None = None


def setup_console() -> None:
    global _file_sink, _buffer_sink
    logger.remove()
    _file_sink = _buffer_sink = None
    _buffer.clear()
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


def start_buffer() -> None:
    """Keep the INFO lines logged from now on until add_file_sink writes them to the top of
    train.log: a run checks its inputs before it creates work_dir, and what it says meanwhile
    (the init_from report, the batch size -1 picked) belongs in the log too."""
    global _buffer_sink
    drop_buffer()
    _buffer_sink = logger.add(lambda m: _buffer.append(str(m)), level="INFO",
                              format=_FILE_FORMAT, colorize=False)


def drop_buffer() -> None:
    global _buffer_sink
    if _buffer_sink is not None:
        _remove(_buffer_sink)
        _buffer_sink = None
    _buffer.clear()


def add_file_sink(path: Path) -> None:
    global _file_sink
    early = list(_buffer)
    remove_file_sink()  # also ends the buffer
    if early:
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write("".join(early))
    _file_sink = logger.add(str(path), level="INFO", encoding="utf-8", errors="backslashreplace",
                            format=_FILE_FORMAT)


def remove_file_sink() -> None:
    """Close train.log (and drop lines still waiting for it)."""
    global _file_sink
    drop_buffer()
    if _file_sink is not None:
        _remove(_file_sink)
        _file_sink = None


def _remove(sink: int) -> None:
    try:
        logger.remove(sink)
    except ValueError:  # already removed by a logger.remove() elsewhere
        pass
