"""DDP through torchrun on CPU (gloo): identical weights on every rank, metrics gathered from
all ranks, and a two-"node" run with a localhost rendezvous."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, cls_config, run_cli, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _config(tmp_path, cls_root, name):
    cfg = cls_config(cls_root, tmp_path / name, sync_bn=True)
    cfg["custom_imports"] = [str(ROOT / "tests" / "ddp_dump_hook.py")]
    cfg["train"]["hooks"] = [{"type": "DumpRankWeights"}]
    return write_config(tmp_path / f"{name}.json", cfg)


def _check_ranks_identical(work):
    r0 = torch.load(work / "rank0.pth", weights_only=True)
    r1 = torch.load(work / "rank1.pth", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # rank 0 alone wrote the run's files, and its checkpoint holds those same weights
    last = torch.load(work / "checkpoints" / "last.pth", weights_only=True)
    for k, v in last["model"].items():
        assert torch.equal(v, r0["state"][k]), k


def _check_metrics_gathered(cfg, work):
    """The DDP run's last evaluation equals a single-process evaluation of the same weights."""
    lines = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert run_cli("-c", str(cfg), "-o", "mode=eval", "-o",
                   f"eval.checkpoint={work / 'checkpoints' / 'last.pth'}") == 0
    single = json.loads((work / "eval" / "metrics.json").read_text())
    assert lines[-1]["top1"] == pytest.approx(single["top1"])
    assert lines[-1]["kappa"] == pytest.approx(single["kappa"])
    assert sum(c["support"] for c in lines[-1]["per_class"].values()) == 24  # every val image once


def test_torchrun_two_processes(tmp_path, cls_root):
    cfg = _config(tmp_path, cls_root, "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(ROOT / "main.py"), "-c", str(cfg)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr
    _check_ranks_identical(tmp_path / "ddp")
    _check_metrics_gathered(cfg, tmp_path / "ddp")


def test_torchrun_two_nodes_localhost(tmp_path, cls_root):
    cfg = _config(tmp_path, cls_root, "nodes")
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
         str(ROOT / "main.py"), "-c", str(cfg)],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    _check_ranks_identical(tmp_path / "nodes")
