"""train.reuse_memory: glibc malloc keeps freed memory for the next training step
(aicore/engine/memory.py). The effect is measured in fresh processes (page faults of real
training steps), since malloc settings are per process."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aicore.engine import memory
from conftest import ROOT, cls_config, run_cli, write_config

glibc = pytest.mark.skipif(memory._libc() is None, reason="glibc malloc only (Linux)")

STEPS = textwrap.dedent("""
    import resource, sys, torch, timm
    torch.set_num_threads(1)
    from aicore.engine import memory
    if sys.argv[1] == "reuse":
        assert memory.keep_freed_memory()
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
""")


def _faults_per_step(mode: str) -> float:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


@glibc
def test_training_steps_stop_faulting_their_memory_in_again():
    default, reuse = _faults_per_step("default"), _faults_per_step("reuse")
    # measured: ~4,700 faults per step by default, ~100 when freed memory is kept
    assert reuse * 5 < default, (default, reuse)


RELEASE = textwrap.dedent("""
    import resource, torch
    from aicore.engine import memory
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    assert memory.keep_freed_memory()
    parts = [torch.ones(2**20) for _ in range(64)]  # 64 blocks of 4 MiB, from the heap
    del parts
    kept = rss_mb()
    memory.release()
    print(kept - rss_mb())
""")


@glibc
def test_release_hands_the_kept_memory_back():
    out = subprocess.run([sys.executable, "-c", RELEASE], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert float(out.strip().splitlines()[-1]) > 200  # of the 256 MiB freed


def test_a_users_own_allocator_choice_is_left_alone():
    assert memory.user_chose_allocator({}) is None
    assert memory.user_chose_allocator({"MALLOC_ARENA_MAX": "2"}) is None  # not a threshold
    assert "MALLOC_TRIM_THRESHOLD_" in memory.user_chose_allocator(
        {"MALLOC_TRIM_THRESHOLD_": "0"})
    assert "glibc.malloc" in memory.user_chose_allocator(
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    assert "jemalloc" in memory.user_chose_allocator(
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})


@pytest.mark.parametrize("reuse", [True, False])
def test_training_switches_it_by_train_reuse_memory(cls_root, tmp_path, monkeypatch, reuse):
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(memory, "release", lambda: calls.append("release"))
    cfg = cls_config(cls_root, tmp_path / "run", reuse_memory=reuse)
    cfg["train"]["epochs"] = 1
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    assert calls == (["keep", "release"] if reuse else [])


def test_reuse_memory_must_be_a_boolean(cls_root, tmp_path, capsys):
    cfg = cls_config(cls_root, tmp_path / "run", reuse_memory="yes")
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg)), "--check") == 2
    assert "train.reuse_memory" in capsys.readouterr().err


def test_an_anomaly_fit_leaves_malloc_alone(tmp_path, monkeypatch):
    """A gradient-free fit is one pass: nothing to reuse between steps, and its memory bank
    should not stay resident."""
    from aicore.tasks.anomaly.synthetic import make
    from test_anomaly import an_config
    root = make(tmp_path / "mvtec", size=48, n_train=6, n_test_good=2, n_test_defect=1,
                categories=("weave",))
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("keep") or True)
    cfg = an_config(root, tmp_path / "run", dataset={"category": "weave"})
    assert run_cli("-c", str(write_config(tmp_path / "c.json", cfg))) == 0
    assert calls == []
