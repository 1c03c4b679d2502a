"""cluster/serve_config.yaml parses with Ray Serve's own schema, and its args with AppArgs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema
from rayrec.serve_app.app import AppArgs

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve_config.yaml"


def test_serve_config_is_valid_for_serve_and_for_rayrec() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "rayrec.serve_app.app:build_app" and app.route_prefix == "/"
    args = AppArgs(**app.args)
    assert args.dim is None and args.resolved().dim == 384 and args.catalog == "movielens-100k"
    assert set(app.args) == set(AppArgs.model_fields)  # every option is in the file


def test_a_broken_key_fails() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    data["applications"][0]["args"]["shardz"] = 3
    with pytest.raises(ValidationError, match="shardz"):
        AppArgs(**data["applications"][0]["args"])
    data = yaml.safe_load(CONFIG.read_text())
    data["applications"][0]["args"]["index"] = "NotAnIndex"
    from rayrec.serve_app.app import build_app

    with pytest.raises(Exception, match="faiss cannot build index factory 'NotAnIndex'"):
        build_app(data["applications"][0]["args"])
