"""What every peer driver in benchmarks/peers/ shares: running one side as a fresh process with
its wall time, CPU time and peak memory, and the alternating order of the sides per round.

CPU seconds (user + system of the process and the loader workers it waited for) are reported
next to the wall time because they are far less sensitive to other jobs on a shared machine:
a wall-time ratio from a loaded machine says little, a CPU-time ratio still says something.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[2]


def run_timed(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run `cmd` to completion; returns wall_s, cpu_s, peak_mb (largest resident set of the
    process or of any child it waited for) and stdout. Output goes to temp files, not pipes,
    so a chatty child never blocks on a full pipe. A failing command stops the benchmark."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n"
                         f"{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux; wait4 reports the process and its waited-for children
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024, "stdout": stdout}


def alternating(sides: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, side) pairs; every other round runs the sides in reverse order, so a machine
    that slows down or speeds up during the benchmark favours neither side."""
    for r in range(rounds):
        for side in (sides if r % 2 == 0 else list(reversed(sides))):
            yield r, side


def medians(rows: Iterable[dict], keys: Iterable[str]) -> dict[str, float]:
    rows = list(rows)
    return {k: statistics.median(float(r[k]) for r in rows) for k in keys
            if all(k in r for r in rows)}


def table(results: dict[str, list[dict]], cols: list[tuple[str, str, str]]) -> str:
    """Markdown table of per-side medians; cols = (key, header, format)."""
    lines = ["| side | " + " | ".join(h for _, h, _ in cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for side, rows in results.items():
        med = medians(rows, [k for k, _, _ in cols])
        lines.append(f"| {side} | " + " | ".join(
            format(med[k], f) if k in med else "-" for k, _, f in cols) + " |")
    return "\n".join(lines)
