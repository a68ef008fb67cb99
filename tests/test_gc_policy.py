"""aicore/gc_policy.py: the collector is paused over a command's start-up and what start-up made is
frozen, only in a command process (main.py, the aicore script); a library call leaves the
collector as it found it; a trainer stops its loader workers itself when train() ends."""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import subprocess
import sys

from conftest import ROOT, cls_config, run_cli, write_config

# a custom import that records, while the config's modules are imported, whether the collector
# is on; the command's start-up runs it
PROBE = """
import gc, json, os
with open(os.environ["GC_PROBE_OUT"], "a") as f:
    f.write(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}) + "\\n")
"""

# after the command returned: is the collector back on, and was start-up frozen?
AFTER = """
import gc, json, sys
sys.argv = ["main.py"] + sys.argv[1:]
from aicore.cli import main
from aicore.gc_policy import command_process
state = {}
try:
    with command_process():
        try:
            main()
        finally:
            state = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
finally:
    print("AFTER " + json.dumps(state), flush=True)
"""


def _probe_config(tmp_path, cls_root):
    probe = tmp_path / "gc_probe.py"
    probe.write_text(PROBE)
    cfg = cls_config(cls_root, tmp_path / "run")
    cfg["custom_imports"] = [str(probe)]
    return write_config(tmp_path / "cfg.json", cfg)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_command_start_up_runs_without_the_collector_then_freezes_it(tmp_path, cls_root):
    cfg = _probe_config(tmp_path, cls_root)
    out = tmp_path / "probe.jsonl"
    env = {**os.environ, "GC_PROBE_OUT": str(out)}
    # main.py itself, as a user runs it
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", str(cfg), "--check"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _records(out) == [{"enabled": False, "frozen": 0}]
    # the same wrapping, then the state once the command has returned
    r = subprocess.run([sys.executable, "-c", AFTER, "-c", str(cfg), "--check"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    after = json.loads(r.stdout.split("AFTER ", 1)[1])
    assert after["enabled"] is True  # back on for the run itself
    assert after["frozen"] > 10_000  # the imported modules' objects were frozen


def test_app_jobs_without_main_py_run_the_command_process(tmp_path, cls_root, monkeypatch):
    """An installed aicore (no main.py beside the package) launches jobs through cli.entry."""
    import aicore
    from aicore.app.jobs import cli_command
    monkeypatch.setattr(aicore, "__file__", str(tmp_path / "site" / "aicore" / "__init__.py"))
    command = cli_command()
    assert "main.py" not in " ".join(command)
    cfg = _probe_config(tmp_path, cls_root)
    out = tmp_path / "probe.jsonl"
    env = {**os.environ, "GC_PROBE_OUT": str(out)}
    r = subprocess.run(command + ["-c", str(cfg), "--check"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _records(out) == [{"enabled": False, "frozen": 0}]


def test_library_call_leaves_the_collector_alone(tmp_path, cls_root, monkeypatch):
    cfg = _probe_config(tmp_path, cls_root)
    out = tmp_path / "probe.jsonl"
    monkeypatch.setenv("GC_PROBE_OUT", str(out))
    frozen_before = gc.get_freeze_count()
    assert gc.isenabled()
    assert run_cli("-c", str(cfg), "--check") == 0
    assert _records(out) == [{"enabled": True, "frozen": frozen_before}]
    assert gc.isenabled() and gc.get_freeze_count() == frozen_before


def test_script_entry_point_uses_the_command_process():
    """The installed `aicore` script goes through commands.entry (the wrapped main)."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'aicore = "aicore.commands:entry"' in text
    r = subprocess.run([sys.executable, "-c",
                        "import gc, sys; from aicore import commands; sys.argv=['aicore', "
                        "'list', 'losses', 'CrossEntropy*']; commands.entry()"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "CrossEntropyLoss" in r.stdout, r.stderr


def test_train_stops_its_loader_workers(tmp_path, cls_root):
    cfg = cls_config(cls_root, tmp_path / "run", epochs=1)
    cfg["data"]["num_workers"] = 1
    from aicore import config as C
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import trainer_class
    import_tasks(["classification"])
    loaded = C.load_config(str(write_config(tmp_path / "cfg.json", cfg)), [])
    C.validate(loaded)
    before = set(multiprocessing.active_children())
    trainer = trainer_class(loaded)(loaded)
    trainer.train()
    assert trainer.train_loader._iterator is None and trainer.val_loader._iterator is None
    assert set(multiprocessing.active_children()) <= before  # no worker left running
