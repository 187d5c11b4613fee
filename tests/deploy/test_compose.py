"""deploy/docker-compose.yml, checked by `docker-compose config` (no Docker daemon runs here): the
service, Redis, PostgreSQL, nginx, Prometheus and Grafana with health checks, the seed's environment
variables, secrets only from the environment, loopback-only ports, and mounts of the very files the
nginx and Prometheus tests run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import load_config
from tests.deploy.cluster import require
from tests.deploy.nginx import TEMPLATE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
REQUIRED = {"POSTGRES_PASSWORD": "pg-secret", "LEARNX_API_KEYS": "node:" + "a" * 64,
            "GRAFANA_ADMIN_PASSWORD": "grafana-secret", "LEGACY_AI_UPSTREAM": "backend:3000"}
SEED_VARIABLES = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ENABLE_LOCAL_MODELS", "LOCAL_MODELS_PATH",
                  "LOCAL_MODEL_GPU_LAYERS", "AI_DEFAULT_PROVIDER", "AI_ENABLE_FALLBACK",
                  "AI_ENABLE_COST_OPTIMIZATION", "ENABLE_VECTOR_CACHE", "VECTOR_CACHE_TYPE",
                  "REDIS_URL", "AI_REQUEST_TIMEOUT", "AI_MAX_RETRIES", "DATABASE_URL"}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    require("docker-compose")
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True,
                          text=True, timeout=60, env={"PATH": os.environ["PATH"], **env})


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = compose_config(REQUIRED)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_services_have_health_checks(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"python-ai-service", "redis", "postgres", "nginx", "prometheus",
                             "alertmanager", "grafana"}
    assert all(s.get("healthcheck", {}).get("test") for s in services.values())
    assert services["python-ai-service"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}


def test_the_seeds_environment_and_no_secret_in_the_file(config: dict[str, Any]) -> None:
    env = config["services"]["python-ai-service"]["environment"]
    assert set(env) >= SEED_VARIABLES
    assert env["DATABASE_URL"] == "postgresql://learnx:pg-secret@postgres:5432/learnx"
    assert env["LEARNX_API_KEYS"] == REQUIRED["LEARNX_API_KEYS"]
    text = COMPOSE.read_text()
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LEARNX_API_KEYS", "POSTGRES_PASSWORD",
                 "GF_SECURITY_ADMIN_PASSWORD"):
        values = re.findall(rf"^\s*{name}: (.*)$", text, re.MULTILINE)
        assert values and all(v.startswith("${") for v in values), f"{name} must come from the env"


def test_refuses_to_start_without_its_secrets() -> None:
    for name in REQUIRED:
        done = compose_config({k: v for k, v in REQUIRED.items() if k != name})
        assert done.returncode != 0 and name in done.stderr


def test_ports_are_published_on_loopback_only(config: dict[str, Any]) -> None:
    published = [p for s in config["services"].values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published)


def test_mounts_are_the_files_the_tests_run(config: dict[str, Any]) -> None:
    def mounts(service: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in config["services"][service]["volumes"]}

    nginx = mounts("nginx")
    assert Path(nginx["/etc/nginx/templates"]) == TEMPLATE.parent
    assert Path(nginx["/etc/nginx/learnx"]) == DEPLOY / "nginx" / "learnx"
    prometheus = mounts("prometheus")
    assert Path(prometheus["/etc/prometheus"]) == DEPLOY / "prometheus"
    assert prometheus["/tmp/ray"] == mounts("python-ai-service")["/tmp/ray"] == "ray-tmp"
    grafana = mounts("grafana")
    assert Path(grafana["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"
    assert Path(grafana["/var/lib/grafana/dashboards"]) == DEPLOY / "grafana" / "dashboards"
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file()
    alertmanager = mounts("alertmanager")
    assert Path(alertmanager["/etc/alertmanager"]) == DEPLOY / "alertmanager"
    alerting = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["alerting"]
    (target,) = alerting["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"


def test_stopping_lets_requests_finish(config: dict[str, Any]) -> None:
    """compose's default 10 s would SIGKILL streams; a request runs up to AI_REQUEST_TIMEOUT."""
    service = config["services"]["python-ai-service"]
    grace = service["stop_grace_period"]
    seconds = int(grace.removesuffix("s")) if grace.endswith("s") and "m" not in grace else 0
    assert seconds > int(service["environment"]["AI_REQUEST_TIMEOUT"]), grace
    assert "python-ai-service" not in config["services"]["nginx"].get("depends_on", {})


def test_nginx_gets_every_template_variable(config: dict[str, Any]) -> None:
    wanted = set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text()))
    env = config["services"]["nginx"]["environment"]
    assert wanted <= set(env)
    assert all(re.fullmatch(env["NGINX_ENVSUBST_FILTER"], name) for name in wanted)
    assert (DEPLOY / "nginx" / "learnx" / f"rollout-{env['AI_ROLLOUT_PERCENT']}.conf").is_file()


def test_the_service_s_environment_is_a_valid_config_and_traces_on_demand(
        config: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in config["services"]["python-ai-service"]["environment"].items()}
    assert not load_config({}, environ=env).tracing.enabled
    traced = compose_config({**REQUIRED, "OTEL_TRACES_EXPORTER": "otlp"})
    assert traced.returncode == 0, traced.stderr
    env = yaml.safe_load(traced.stdout)["services"]["python-ai-service"]["environment"]
    tracing = load_config({}, environ={k: str(v) for k, v in env.items()}).tracing
    assert tracing.enabled and tracing.otlp_endpoint == "http://otel-collector:4318/v1/traces"
