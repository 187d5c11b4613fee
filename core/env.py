"""The seed's environment variables: a declarative map from each variable to where it goes in the
config (pydantic converts and checks the values), and errors that name the variable that was wrong
and what to write instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from models.catalog import PROVIDERS


@dataclass(frozen=True)
class EnvVar:
    """Where an environment variable goes in the config; pydantic converts and checks the value."""

    paths: tuple[tuple[str, ...], ...]
    hint: str
    parse: Callable[[str], Any] = str.strip


def _one_of(names: tuple[str, ...]) -> str:
    """'local, openai or anthropic'."""
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _api_keys(value: str) -> list[dict[str, str]]:
    """`id:sha256[:role],...`; an item without a colon is left for validation to name."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    return [dict(zip(("id", "sha256", "role"), item.split(":", 2), strict=False)) for item in items]


def _exporter(value: str) -> Any:
    """OTEL_TRACES_EXPORTER: otlp on, none off; anything else is left for validation to name."""
    return {"otlp": True, "none": False}.get(value.strip().lower(), value)


ENV: dict[str, EnvVar] = {
    "ENABLE_LOCAL_MODELS": EnvVar((("enable_local_models",),), "true or false"),
    "LOCAL_MODELS_PATH": EnvVar((("local_models_path",),), "a folder of GGUF files"),
    "AI_REQUEST_TIMEOUT": EnvVar((("router", "request_timeout_s"),), "seconds, e.g. 30"),
    "AI_MAX_RETRIES": EnvVar((("router", "max_retries"),), "a whole number, e.g. 3"),
    "AI_DEFAULT_PROVIDER": EnvVar((("router", "default_provider"),),
                                  _one_of(PROVIDERS), lambda v: v.strip().lower()),
    "AI_ENABLE_FALLBACK": EnvVar((("router", "enable_fallback"),), "true or false"),
    "AI_ENABLE_COST_OPTIMIZATION": EnvVar((("router", "enable_cost_optimization"),),
                                          "true or false"),
    "ENABLE_VECTOR_CACHE": EnvVar((("embedder", "cache", "enabled"),), "true or false"),
    "VECTOR_CACHE_TYPE": EnvVar((("embedder", "cache", "type"),), "memory or redis",
                                lambda v: v.strip().lower()),
    "REDIS_URL": EnvVar((("embedder", "cache", "redis_url"), ("redis_url",)),
                        "redis://host:6379/0"),
    "DATABASE_URL": EnvVar((("ledger", "database_url"),),
                           "postgresql://user@host/db or sqlite:///path"),
    # OpenTelemetry's standard variables (core/tracing.py; OTEL_SDK_DISABLED=true is read there).
    "OTEL_TRACES_EXPORTER": EnvVar((("tracing", "enabled"),), "otlp or none", _exporter),
    "OTEL_SERVICE_NAME": EnvVar((("tracing", "service_name"),), "a service name, e.g. learnx-ai"),
    "OTEL_EXPORTER_OTLP_ENDPOINT": EnvVar((("tracing", "otlp_endpoint"),),
                                          "the collector's base URL, e.g. http://otel-collector:4318",
                                          lambda v: v.strip().rstrip("/") + "/v1/traces"),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": EnvVar(  # after the base URL: it wins
        (("tracing", "otlp_endpoint"),), "the traces URL, e.g. http://otel-collector:4318/v1/traces"),
    "OTEL_TRACES_SAMPLER_ARG": EnvVar((("tracing", "sample_ratio"),), "a ratio from 0 to 1"),
    "LEARNX_AUTH_ENABLED": EnvVar((("auth", "enabled"),), "true or false"),
    "LEARNX_API_KEYS": EnvVar((("auth", "api_keys"),),
                              "id:sha256,... as printed by python -m router.http.auth new-key NAME; "
                              "id:sha256:admin for an admin key",
                              _api_keys),
}


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The seed's environment variables as a partial config (env wins over YAML)."""
    out: dict[str, Any] = {}
    for name, var in ENV.items():
        if name in environ:
            for path in var.paths:
                _put(out, path, var.parse(environ[name]))
    return out


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


class ConfigError(ValueError):
    """A setting is wrong; the message names it and what to write instead."""


def explain(error: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    lines = []
    for problem in error.errors():
        loc = tuple(str(part) for part in problem["loc"])
        where, source = ".".join(loc), _source(loc, environ)
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {message} (at {where})" if source
                     else f"{where or 'config'}: {message}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _source(loc: tuple[str, ...], environ: Mapping[str, str]) -> str | None:
    """`NAME=value (write ...)` when an environment variable set what `loc` points at."""
    for name, var in ENV.items():
        if name in environ and any(loc[:len(path)] == path for path in var.paths):
            return f"{name}={environ[name]!r} (write {var.hint})"
    if "LOCAL_MODEL_GPU_LAYERS" in environ and loc[-2:] == ("llama_cpp", "n_gpu_layers"):
        return (f"LOCAL_MODEL_GPU_LAYERS={environ['LOCAL_MODEL_GPU_LAYERS']!r} "
                "(write a whole number, -1 for every layer)")
    return None
