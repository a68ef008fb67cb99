"""MLflowHook against a real local tracking store (SQLite in tmp): the run, its parameters,
per-epoch metrics and artifacts are found with mlflow.search_runs / the client."""
from __future__ import annotations

import json

import pytest

from tests.conftest import cls_config, run_cli, write_config

mlflow = pytest.importorskip("mlflow")


def test_training_run_is_tracked(cls_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hook = {"type": "MLflowHook", "tracking_uri": uri, "experiment": "aicore-test",
            "run_name": "tiny", "log_checkpoint": True,
            "artifact_location": (tmp_path / "artifacts").as_uri()}
    cfg = cls_config(cls_root, tmp_path / "run", hooks=[hook])
    cfg["train"]["epochs"] = 2
    path = write_config(tmp_path / "c.json", cfg)
    old = mlflow.get_tracking_uri()
    try:
        # the hook must not disturb the caller's own active run
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("caller")
        with mlflow.start_run(run_name="outer") as outer:
            assert run_cli("-c", str(path), "-o", f"mlflow_artifacts={str(tmp_path)!r}") == 2
            assert run_cli("-c", str(path)) == 0
            assert mlflow.active_run().info.run_id == outer.info.run_id
        runs = mlflow.search_runs(experiment_names=["aicore-test"], output_format="list")
    finally:
        mlflow.set_tracking_uri(old)
    assert len(runs) == 1  # the bad config above created no run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    params = run.data.params
    assert params["train.epochs"] == "2" and params["model.name"] == "resnet10t"
    assert params["optimizer.type"] == "SGD" and params["task"] == "classification"
    assert {"top1", "f1_macro", "lr", "train_loss", "val_loss"} <= set(run.data.metrics), \
        run.data.metrics
    client = mlflow.tracking.MlflowClient(uri)
    for name in ("train_loss", "top1", "val_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2]
    # the lr of every optimizer step: 48 images / batch 8 = 6 steps per epoch
    lr_steps = client.get_metric_history(run.info.run_id, "lr_step")
    assert sorted(m.step for m in lr_steps) == list(range(1, 13))
    # the values are the epoch's own validation metrics, as in work_dir/metrics.jsonl
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    top1 = [m.value for m in client.get_metric_history(run.info.run_id, "top1")]
    assert top1 == pytest.approx([r["top1"] for r in rows if r["weights"] == "model"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "train.log", "results.png", "results.csv"} <= names
    assert "checkpoints" in names
    assert (tmp_path / "artifacts" / run.info.run_id / "artifacts" / "config.json").is_file()


def test_missing_hook_argument_is_a_config_error(cls_root, tmp_path, capsys):
    hook = {"type": "MLflowHook", "tracking_uri": "sqlite:///x.db", "experimnet": "e"}
    path = write_config(tmp_path / "c.json",
                        cls_config(cls_root, tmp_path / "run", hooks=[hook]))
    assert run_cli("-c", str(path)) == 2
    assert "experimnet" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resumed_run_continues_the_same_mlflow_run(cls_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hook = {"type": "MLflowHook", "tracking_uri": uri, "experiment": "resume",
            "artifact_location": (tmp_path / "artifacts").as_uri()}
    cfg = cls_config(cls_root, tmp_path / "run", hooks=[hook])
    cfg["train"]["epochs"] = 1
    path = write_config(tmp_path / "c.json", cfg)
    assert run_cli("-c", str(path)) == 0
    assert run_cli("-c", str(path), "-o", "train.epochs=2", "-o", "train.resume=true") == 0
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("resume")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert steps == [1, 2]
