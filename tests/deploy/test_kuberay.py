"""The KubeRay manifests: valid against KubeRay's RayService CRD (with unknown fields refused, as the API
server's strict field validation does), serveConfigV2 identical to what scripts/serve_config.py makes
of configs/*.yaml, and wired as the service needs (ports, readiness, secrets, GPUs, autoscaling)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"  # tests/data/README.md
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("rayservice-*.yaml"))
SECRET_KEYS = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LEARNX_API_KEYS", "DATABASE_URL", "REDIS_URL",
               "HF_TOKEN"}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

sys.path.insert(0, str(ROOT / "scripts"))
import serve_config  # noqa: E402  (scripts/ is not a package)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever Kubernetes would refuse them."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


@cache
def validator() -> jsonschema.Draft7Validator:
    crd = next(d for d in yaml.load_all(CRD.read_text(), Loader=Loader) if d)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def rayservice(path: Path) -> dict[str, Any]:
    return serve_config.rayservice(path)


def serve_config_of(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def groups(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for g in groups(service) for c in g["template"]["spec"]["containers"]]


def test_there_is_a_cpu_and_a_gpu_profile() -> None:
    assert [m.name for m in MANIFESTS] == ["rayservice-cpu.yaml", "rayservice-gpu.yaml"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_crd(manifest: Path) -> None:
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in validator().iter_errors(rayservice(manifest))]
    assert not errors, "\n".join(errors)


def test_the_crd_check_refuses_a_misspelt_field() -> None:
    service = copy.deepcopy(rayservice(MANIFESTS[0]))
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not validator().is_valid(service)
    service = copy.deepcopy(rayservice(MANIFESTS[0]))
    service["spec"]["serveConfigV2"] = {"applications": []}  # a string in the CRD
    assert not validator().is_valid(service)


def test_serve_configs_do_not_drift_from_configs() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_config.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_stale_manifest_is_caught_and_regenerated(tmp_path: Path) -> None:
    stale = tmp_path / MANIFESTS[1].name
    shutil.copy(MANIFESTS[1], stale)
    stale.write_text(serve_config.rewrite(stale, "proxy_location: EveryNode\napplications: []\n"))
    assert serve_config.drifted(stale)
    stale.write_text(serve_config.rewrite(stale, serve_config.generate(serve_config.source_of(stale))))
    assert not serve_config.drifted(stale)
    assert stale.read_text() == MANIFESTS[1].read_text()  # the rest of the manifest is untouched


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_ports_readiness_and_secrets(manifest: Path) -> None:
    service = rayservice(manifest)
    port = serve_config_of(service)["http_options"]["port"]
    for container in containers(service):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == port and ports["metrics"] == 8080
        assert container["envFrom"] == [{"secretRef": {"name": "learnx-ai-secrets"}}]
        plain = {e["name"] for e in container.get("env", [])}
        assert not plain & SECRET_KEYS, "secrets come from the Secret, never inline"
    head, *workers = groups(service)
    # Serve is deployed only once the head is ready: an app-level probe there would never pass.
    assert "readinessProbe" not in head["template"]["spec"]["containers"][0]
    for group in workers:
        probe = group["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["httpGet"] == {"path": "/ready", "port": "serve"}
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_gpu_group_fits_the_vllm_autoscaling() -> None:
    service = rayservice(KUBERAY / "rayservice-gpu.yaml")
    (gpu,) = [g for g in groups(service) if g.get("groupName") == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    args = serve_config_of(service)["applications"][0]["args"]
    vllm = [m for m in args["local_models"] if m["engine"] == "vllm"]
    assert vllm and args["require_gpus_at_start"] is False  # GPU pods come on demand
    needed = sum(m["autoscaling_config"]["max_replicas"] * m["ray_actor_options"]["num_gpus"]
                 for m in vllm)
    assert gpu["maxReplicas"] * int(limits["nvidia.com/gpu"]) >= needed
    assert gpu["minReplicas"] >= 1


def test_example_secret_holds_placeholders_only() -> None:
    secret = yaml.safe_load((KUBERAY / "secrets.example.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "learnx-ai-secrets"
    assert set(secret["stringData"]) == SECRET_KEYS
    assert all(v.startswith("<") and v.endswith(">") for v in secret["stringData"].values())
