"""The `aicore` console command (aicore/commands.py) and the packaged configs: sub-commands with
--help, shipped config names, the main.py error contract, and a non-editable install into a
fresh venv that trains the quickstart from an empty temp dir."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT, cls_config, run_cli, write_config


def aicore_cmd(*args: str, cwd: Path | None = None) -> int:
    from aicore.commands import main
    return run_cli(*args, cwd=cwd, main=main)


@pytest.mark.parametrize("command", ["train", "eval", "demo", "export", "check", "list",
                                     "demo-data"])
def test_every_command_has_help(command, capsys):
    assert aicore_cmd(command, "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: aicore {command}")


def test_check_resolves_a_shipped_name_from_any_directory(tmp_path, capsys):
    assert aicore_cmd("check", "-c", "classification/quickstart", "-o", "train.epochs=1",
                      cwd=tmp_path) == 0
    out = capsys.readouterr().out
    assert '"epochs": 1' in out and '"resnet10t"' in out
    assert not any(tmp_path.iterdir())  # check writes nothing


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert aicore_cmd("train", "-c", "classification/nope", cwd=tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config file not found: classification/nope")
    assert "classification/quickstart" in err
    assert aicore_cmd("check", "-c", "classification/quickstart", "-o", "trian.epochs=1",
                      cwd=tmp_path) == 2
    assert "unknown config key 'trian'" in capsys.readouterr().err
    assert aicore_cmd("frobnicate") == 2


def test_list_configs_and_registries(capsys):
    assert aicore_cmd("list", "configs", "detection/*") == 0
    out = capsys.readouterr().out.split()
    assert "detection/quickstart" in out and all(n.startswith("detection/") for n in out)
    assert aicore_cmd("list", "losses", "*Cross*") == 0
    assert "CrossEntropyLoss" in capsys.readouterr().out


def test_train_then_eval_through_the_command(cls_root, tmp_path):
    cfg = write_config(tmp_path / "c.json", cls_config(cls_root, tmp_path / "run"))
    assert aicore_cmd("train", "-c", str(cfg), "-o", "train.epochs=1") == 0
    assert (tmp_path / "run" / "checkpoints" / "best.pth").is_file()
    assert aicore_cmd("eval", "-c", str(cfg), "-o", "eval.tsne=false") == 0
    assert any((tmp_path / "run" / "eval").iterdir())


def _copy_source(dst: Path) -> Path:
    """The files a build needs, so building leaves no build/ folder in the checkout."""
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "aicore", dst / "aicore", ignore=ignore)
    shutil.copytree(ROOT / "configs", dst / "configs", ignore=ignore)
    return dst


@pytest.mark.slow
def test_non_editable_install_in_a_fresh_venv_trains_the_quickstart(tmp_path):
    """Build a wheel, install it (no dependencies, no network) into a new venv whose only
    extra path is this environment's site-packages (for torch & co.; its .pth files, including
    the editable install of AICore, are not processed there), then train from an empty dir."""
    pytest.importorskip("setuptools")  # the build backend, used without build isolation
    src = _copy_source(tmp_path / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheels"), str(src)], check=True, env=env)
    wheel = next((tmp_path / "wheels").glob("aicore-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    Path(site.strip(), "aicore_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "-q", str(wheel)], check=True, env=env)
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import aicore; print(aicore.__file__)"], cwd=work,
                           capture_output=True, text=True, env=env, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the repo
    aicore = str(venv / "bin" / "aicore")
    subprocess.run([aicore, "demo-data", "data/demo", "--task", "classification"], cwd=work,
                   check=True, env=env, capture_output=True)
    run = subprocess.run([aicore, "train", "-c", "classification/quickstart",
                          "-o", "train.epochs=1"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "runs" / "quickstart" / "checkpoints" / "best.pth").is_file()
    assert (work / "runs" / "quickstart" / "train.log").is_file()
