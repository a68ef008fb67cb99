"""`python main.py --schema`: a JSON Schema every shipped config satisfies and that refuses the
mistakes the validator refuses."""
import json
from pathlib import Path

import jsonschema
import pytest

from aicore.config import load_config, to_dict
from tests.conftest import ROOT, run_cli

SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.json") if "_base_" not in p.parts)


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "aicore.schema.json"
    assert run_cli("--schema", str(out)) == 0
    schema = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_to_stdout(capsys):
    assert run_cli("--schema") == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["train"]["properties"]["epochs"]["minimum"] == 1
    assert "SGD" in schema["properties"]["optimizer"]["anyOf"][0]["properties"]["type"]["enum"]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_configs_satisfy_the_schema(validator, path: Path):
    cfg = to_dict(load_config(path))  # _base_ resolved, defaults filled in
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(cfg)]
    assert not errors, errors
    # the file as written (with its _base_ key) is valid too, as an editor sees it
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert not list(validator.iter_errors(raw))


@pytest.mark.parametrize("patch", [
    {"train": {"epochs": "abc"}},
    {"train": {"epochs": 0}},
    {"data": 5},
    {"train": {"ema": {"decay": 2}}},
    {"eval": {"tta": "flip"}},
    {"export": {"formats": ["trt"]}},
    {"optimizer": {"type": "SGD", "lr": -1}},
    {"optimizer": {"type": "SGD", "momentun": 0.9}},
    {"model": {"type": "TimmClasifier"}},
    {"scheduler": {"type": "cosine", "warmup_ratio": 3}},
    {"trian": {}},
])
def test_schema_refuses_what_validation_refuses(validator, patch):
    base = json.loads((ROOT / "configs/classification/quickstart.json").read_text())
    cfg = {**base, **patch}
    assert list(validator.iter_errors(cfg)), patch
