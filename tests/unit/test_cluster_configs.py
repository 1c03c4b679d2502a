"""cluster/: the launcher YAML against Ray's autoscaler schema, the Serve configs against Serve's
schema and AppArgs, the RayService's structure and its embedded Serve config; and that they agree."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema
from rayrec.serve_app.app import AppArgs

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def _args(config: dict[str, Any]) -> dict[str, Any]:
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "rayrec.serve_app.app:build_app"
    AppArgs(**app.args)
    return dict(app.args)


# ----- the launcher YAML --------------------------------------------------------
def test_aws_launcher_yaml_passes_rays_autoscaler_schema():
    config = _load("aws.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    assert types["cpu_worker"]["resources"] == {"rayrec_shard": 100}
    assert types["gpu_worker"]["resources"] == {"rayrec_encoder": 100}
    assert "rayrec_shard" not in types["head"]["resources"]
    deploy = [c for c in config["head_start_ray_commands"] if "serve deploy" in c]
    assert deploy and "cluster/serve_config.cluster.yaml" in deploy[0]


@pytest.mark.parametrize(
    "path, bad",
    [
        (("available_node_types", "cpu_worker"), {"min_worker": 2}),  # misspelt key
        (("available_node_types", "gpu_worker"), {"max_workers": "four"}),  # wrong type
        ((), {"max_workerz": 1}),  # unknown top-level key
    ],
)
def test_a_broken_launcher_key_fails(path, bad):
    config = _load("aws.yaml")
    target = config
    for key in path:
        target = target[key]
    target.update(bad)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))


# ----- the Serve configs ----------------------------------------------------------
@pytest.mark.parametrize("variant", ["serve_config.cluster.yaml", "serve_config.multinode.yaml"])
def test_cluster_serve_configs_differ_from_the_local_one_only_where_they_say_so(variant):
    local, cluster = _load("serve_config.yaml"), _load(variant)
    local_args, cluster_args = _args(local), _args(cluster)
    assert set(local_args) == set(cluster_args) == set(AppArgs.model_fields)
    text = (CLUSTER / variant).read_text()
    marked = set(re.findall(r"^\s+(\w+):.*# cluster:", text, flags=re.M))
    changed = {k for k in local_args if local_args[k] != cluster_args[k]}
    changed |= {k for k in ("host", "port") if local["http_options"][k] != cluster["http_options"][k]}
    assert changed == marked
    # The custom resources the Serve config asks for are the ones the nodes advertise.
    assert set(cluster_args["shard_resources"]) == {"rayrec_shard"}
    assert set(cluster_args["encoder_resources"]) == {"rayrec_encoder"}


# ----- the KubeRay RayService -----------------------------------------------------
_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "resources": {
            "type": "object",
            "properties": {"limits": {"type": "object"}, "requests": {"type": "object"}},
            "additionalProperties": False,
        },
        "ports": {"type": "array"},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}, "valueFrom": {
                    "type": "object",
                    "properties": {"secretKeyRef": {"type": "object", "required": ["name", "key"]}},
                    "additionalProperties": False,
                }},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}},
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
RAYSERVICE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["serveConfigV2", "rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                "serveConfigV2": {"type": "string"},
                "rayClusterConfig": {
                    "type": "object",
                    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "authOptions": {
                            "type": "object",
                            "properties": {"mode": {"enum": ["token", "disabled"]}},
                            "additionalProperties": False,
                        },
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "properties": {"rayStartParams": _PARAMS, "template": _TEMPLATE},
                            "additionalProperties": False,
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": [
                                    "groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"
                                ],
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "minimum": 1},
                                    "rayStartParams": _PARAMS,
                                    "template": _TEMPLATE,
                                },
                                "additionalProperties": False,
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_rayservice_structure_and_its_embedded_serve_config():
    service = _load("rayservice.yaml")
    jsonschema.validate(service, RAYSERVICE_SCHEMA)
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == _load("serve_config.cluster.yaml")  # the same Serve config, verbatim
    _args(embedded)
    cluster = service["spec"]["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    # rayStartParams.resources is a JSON object inside a quoted string, as KubeRay passes it to `ray start`.
    resources = {name: json.loads(json.loads(g["rayStartParams"]["resources"])) for name, g in groups.items()}
    assert resources == {"cpu-workers": {"rayrec_shard": 100}, "gpu-workers": {"rayrec_encoder": 100}}
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    # Ray's token auth guards the dashboard and job API (they listen on 0.0.0.0); every container, wherever an
    # ingress replica lands, has the API key the Serve config requires, from a Secret.
    assert cluster["authOptions"] == {"mode": "token"}
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in groups.values()]
    args = _args(embedded)
    for c in containers:
        assert [e["name"] for e in c["env"]] == [args["api_key_env"]] and "secretKeyRef" in c["env"][0]["valueFrom"]


def test_aws_nodes_start_ray_with_token_auth_and_the_api_key():
    config = _load("aws.yaml")
    for command in [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command and "RAYREC_API_KEY=" in command, command
    assert "~/.ray/auth_token" in config["file_mounts"] and "~/.rayrec_api_key" in config["file_mounts"]


def test_a_broken_rayservice_key_fails():
    service = _load("rayservice.yaml")
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupname"] = "typo"
    with pytest.raises(jsonschema.ValidationError, match="groupname"):
        jsonschema.validate(service, RAYSERVICE_SCHEMA)
    service = _load("rayservice.yaml")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    embedded["applications"][0]["args"]["shardz"] = 2
    with pytest.raises(ValidationError, match="shardz"):
        _args(embedded)
