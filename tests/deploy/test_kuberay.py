"""The KubeRay manifests: valid against KubeRay's RayService CRD (with unknown fields refused, as the API
server's strict field validation does), their pod templates and the objects beside them
(NetworkPolicy, PodDisruptionBudgets, the models PVC) valid against Kubernetes' own schemas
(kubernetes-validate, strict), serveConfigV2 identical to what scripts/serve_config.py makes of
configs/*.yaml and valid for Ray Serve, and wired as the service needs: per-pod readiness, secrets,
GPUs, autoscaling, GCS fault tolerance, stopping times that let requests finish, Ray token auth,
Pod Security "restricted" with a read-only root, weights on a volume that outlives the pod."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"  # tests/data/README.md
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("rayservice-*.yaml"))
OBJECTS = [KUBERAY / "policies.yaml", KUBERAY / "models-pvc.yaml"]
KUBERNETES = "1.33"  # the Kubernetes version whose schemas the objects are checked against
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
SECRET_KEYS = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LEARNX_API_KEYS", "DATABASE_URL", "REDIS_URL",
               "HF_TOKEN"}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

sys.path.insert(0, str(ROOT / "scripts"))
import serve_config  # noqa: E402  (scripts/ is not a package)

from core.config import load_config  # noqa: E402

DEV = {"auth": {"enabled": False}}  # the keys come from the Secret


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
        # The pod's own Serve proxy: the app-wide /ready would drop every pod when one model is down.
        probe = group["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["httpGet"] == {"path": "/-/healthz", "port": "serve"}
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True


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


def pod_templates(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [g["template"] for g in groups(service)]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_pod_templates_are_valid_kubernetes(manifest: Path) -> None:
    for template in pod_templates(rayservice(manifest)):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "check"}, "template": template},
                                     KUBERNETES, strict=True)


@pytest.mark.parametrize("path", OBJECTS, ids=lambda p: p.name)
def test_objects_beside_the_services_are_valid_kubernetes(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_kubernetes_check_refuses_a_misspelt_field() -> None:
    policy = next(yaml.safe_load_all(OBJECTS[0].read_text()))
    policy["spec"]["podSelectors"] = policy["spec"].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, KUBERNETES, strict=True)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_serve_config_is_valid_for_ray_serve(manifest: Path) -> None:
    config = serve_config_of(rayservice(manifest))
    ServeDeploySchema.model_validate(config)
    # Serve's schema lets unknown keys through; a misspelt option would be silently ignored.
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            assert set(deployment) <= set(DeploymentSchema.model_fields), deployment


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_no_deprecated_field_poses_as_a_safety_valve(manifest: Path) -> None:
    """KubeRay ignores these (rayservice_types.go: "Deprecated: This field is not used anymore")."""
    spec = rayservice(manifest)["spec"]
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(spec)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_the_haproxy_ingress_runs_without_splice(manifest: Path) -> None:
    """Every pod's HAProxy is scripts/haproxy, where the images put the repository (/app)."""
    for container in containers(rayservice(manifest)):
        env = env_of(container)
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/app/scripts/haproxy"
    assert (ROOT / "scripts" / "haproxy").stat().st_mode & 0o111


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_stopping_lets_the_longest_request_finish(manifest: Path) -> None:
    """request <= Serve's graceful shutdown < Ray's SIGTERM drain < the pod's grace period <= the old
    cluster's deletion delay, which also outlasts nginx's wait for an answer."""
    service = rayservice(manifest)
    (app,) = serve_config_of(service)["applications"]
    request_s = app["args"].get("router", {}).get("request_timeout_s", 60)
    graceful = {d["name"]: d["graceful_shutdown_timeout_s"] for d in app["deployments"]}
    local = {f"LLMServer:{m['name']}" for m in app["args"].get("local_models", [])}
    assert set(graceful) == {"Router", "Embedder"} | local
    drain = {float(env_of(c)["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]) for c in containers(service)}
    grace = {t["spec"]["terminationGracePeriodSeconds"] for t in pod_templates(service)}
    delay = service["spec"]["rayClusterDeletionDelaySeconds"]
    nginx_read_s = int(re.search(r"proxy_read_timeout (\d+)s;", NGINX_TEMPLATE.read_text())[1])
    assert request_s <= min(graceful.values())
    assert max(graceful.values()) < min(drain) and max(drain) < min(grace)
    assert max(grace) <= delay and nginx_read_s <= delay


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_gcs_state_survives_the_head(manifest: Path) -> None:
    options = rayservice(manifest)["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"]
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"]["key"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_ray_control_plane_is_locked(manifest: Path) -> None:
    """Ray token auth on; the dashboard, GCS and client ports admitted from Ray pods and, for the
    dashboard, the operator only (policies.yaml)."""
    service = rayservice(manifest)
    assert service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    labels = {t["metadata"]["labels"]["app.kubernetes.io/name"] for t in pod_templates(service)}
    policy = next(d for d in yaml.safe_load_all(OBJECTS[0].read_text())
                  if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": labels.pop()}
    assert not labels
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        sources = rule.get("from", [])
        if not ports:  # every port: only from Ray pods of this service
            assert sources == [{"podSelector": policy["spec"]["podSelector"]}]
        elif not sources:  # from anywhere: only the API
            assert ports == {8001}
        else:
            assert not ports & {6379, 10001}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_pods_meet_pod_security_restricted_with_a_read_only_root(manifest: Path) -> None:
    service = rayservice(manifest)
    for template in pod_templates(service):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
        writable = {m["mountPath"] for c in template["spec"]["containers"]
                    for m in c["volumeMounts"]}
        assert {"/tmp/ray", "/tmp", "/dev/shm"} <= writable
    autoscaler = service["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    for context in [autoscaler, *(c["securityContext"] for c in containers(service))]:
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in containers(service))


def test_gpu_weights_live_on_a_shared_volume() -> None:
    service = rayservice(KUBERAY / "rayservice-gpu.yaml")
    (gpu,) = [g for g in groups(service) if g.get("groupName") == "gpu"]
    (mount,) = [m for m in gpu["template"]["spec"]["containers"][0]["volumeMounts"]
                if m["mountPath"] == "/models"]
    (volume,) = [v for v in gpu["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = yaml.safe_load(OBJECTS[1].read_text())
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # several GPU pods mount it
    # Ray schedules only the vLLM replica's CPUs there: a GPU pod never holds a Router or Embedder.
    (app,) = serve_config_of(service)["applications"]
    vllm_cpus = {m["ray_actor_options"]["num_cpus"] for m in app["args"]["local_models"]}
    assert {float(gpu["rayStartParams"]["num-cpus"])} == {float(c) for c in vllm_cpus}


def test_disruption_budgets_cover_each_worker_group() -> None:
    budgets = [d for d in yaml.safe_load_all(OBJECTS[0].read_text())
               if d["kind"] == "PodDisruptionBudget"]
    for manifest in MANIFESTS:
        for group in rayservice(manifest)["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
            pod = {**group["template"]["metadata"]["labels"], "ray.io/node-type": "worker",
                   "ray.io/group": group["groupName"]}
            matching = [b for b in budgets
                        if b["spec"]["selector"]["matchLabels"].items() <= pod.items()]
            assert len(matching) == 1 and matching[0]["spec"]["maxUnavailable"] == 1, group["groupName"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_every_pod_can_trace_to_the_collector(manifest: Path) -> None:
    """Every pod (each replica exports its own spans) has the same OpenTelemetry variables: traces
    off until OTEL_TRACES_EXPORTER=otlp, then sent to the collector, pods named in the resource."""
    for container in containers(rayservice(manifest)):
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert not load_config(DEV, environ=env).tracing.enabled
        tracing = load_config(DEV, environ={**env, "OTEL_TRACES_EXPORTER": "otlp"}).tracing
        assert tracing.enabled and tracing.sample_ratio == 0.1
        assert tracing.otlp_endpoint == "http://otel-collector.observability:4318/v1/traces"
        assert env["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.pod.name=$(K8S_POD_NAME)"
        (pod,) = [e for e in container["env"] if e["name"] == "K8S_POD_NAME"]
        assert pod["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
