"""Background jobs: ``python main.py -c CONFIG -o ...`` as argument lists (never a shell).

Before a job is queued the config is checked with ``--check`` in a child process, so a bad
config answers with the CLI's own ``error: ...`` line and nothing starts. Jobs run one at a
time (``max_parallel``) in submission order; stdout/stderr go to ``<state>/jobs/<id>.log``.
Cancel sends SIGINT (the CLI exits cleanly and releases the work_dir lock), then SIGKILL
after a grace period.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aicore

MODES = ("trainval", "eval", "export", "demo")


def cli_command() -> list[str]:
    main_py = Path(aicore.__file__).resolve().parent.parent / "main.py"
    if main_py.is_file():
        return [sys.executable, str(main_py)]
    return [sys.executable, "-c", "from aicore.cli import entry; entry()"]


class LaunchError(ValueError):
    pass


@dataclass
class Job:
    id: str
    config: str
    overrides: list[str]
    work_dir: str
    task: str
    state: str = "queued"  # queued, running, finished, failed, cancelled
    rc: int | None = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    log: str = ""

    def public(self) -> dict[str, Any]:
        return asdict(self)


def check_config(config: str, overrides: list[str], cwd: Path) -> dict[str, Any]:
    """The resolved config from ``main.py --check``; LaunchError with the CLI's error line."""
    proc = subprocess.run(cli_command() + ["-c", config] + [a for o in overrides
                                                             for a in ("-o", o)] + ["--check"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        raise LaunchError(lines[-1] if lines else (proc.stderr.strip().splitlines() or
                                                   [f"error: exit status {proc.returncode}"])[-1])
    start = proc.stdout.find("{")
    try:
        return json.loads(proc.stdout[start:])
    except ValueError:
        raise LaunchError("error: main.py --check printed no config") from None


class JobQueue:
    def __init__(self, state_dir: Path, cwd: Path, max_parallel: int = 1,
                 grace_s: float = 10.0) -> None:
        self.dir = state_dir / "jobs"
        self.cwd = cwd
        self.max_parallel = max_parallel
        self.grace_s = grace_s
        self.jobs: dict[str, Job] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self._n = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="aicore-app-jobs", daemon=True)
        self.thread.start()

    def submit(self, config: str, overrides: list[str]) -> Job:
        resolved = check_config(config, overrides, self.cwd)
        if resolved.get("mode") not in MODES:
            raise LaunchError(f"error: mode = {resolved.get('mode')!r}: use one of {MODES}")
        with self.lock:
            self._n += 1
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{self._n}"
            self.dir.mkdir(parents=True, exist_ok=True)
            job = Job(id=job_id, config=config, overrides=list(overrides),
                      work_dir=str((self.cwd / resolved["work_dir"]).resolve()),
                      task=str(resolved.get("task")), log=str(self.dir / f"{job_id}.log"))
            self.jobs[job_id] = job
        return job

    def cancel(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs[job_id]
            if job.state == "queued":
                job.state, job.ended = "cancelled", time.time()
                return job
            proc = self.procs.get(job_id)
        if job.state == "running" and proc is not None:
            job.state = "cancelling"
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        return job

    def list(self) -> list[Job]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.submitted, reverse=True)

    def state_of(self, work_dir: Path) -> str | None:
        """The newest job's state for a run folder, if the app launched it."""
        target = str(work_dir.resolve())
        for job in self.list():
            if job.work_dir == target or target.startswith(job.work_dir + "/"):
                return job.state
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                for job_id, proc in list(self.procs.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    job = self.jobs[job_id]
                    job.rc, job.ended = rc, time.time()
                    if job.state == "cancelling" or rc in (130, -signal.SIGINT, -9):
                        job.state = "cancelled"
                    else:
                        job.state = "finished" if rc == 0 else "failed"
                    if rc:
                        job.error = _error_line(Path(job.log))
                    del self.procs[job_id]
                queued = [j for j in sorted(self.jobs.values(), key=lambda j: j.submitted)
                          if j.state == "queued"]
                while queued and len(self.procs) < self.max_parallel:
                    self._start(queued.pop(0))
            self._stop.wait(0.3)

    def _start(self, job: Job) -> None:
        args = cli_command() + ["-c", job.config] + [a for o in job.overrides
                                                      for a in ("-o", o)]
        out = open(job.log, "w", encoding="utf-8")
        try:
            self.procs[job.id] = subprocess.Popen(args, cwd=self.cwd, stdout=out,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True)
            job.state, job.started = "running", time.time()
        except OSError as e:
            job.state, job.error, job.ended = "failed", f"error: cannot start: {e}", time.time()
        finally:
            out.close()

    def shutdown(self) -> None:
        self._stop.set()
        for job_id in list(self.procs):
            self.cancel(job_id)


def _error_line(log: Path) -> str | None:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln for ln in lines if ln.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else None)
