"""The traces' config (core/tracing.py); the standard OTEL_* variables set it too (core/env.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from core.config_model import ConfigModel


class TracingConfig(ConfigModel):
    """OpenTelemetry traces of each request across the Router, the model replicas and the Embedder
    (core/tracing.py), exported over OTLP/HTTP. Off by default; the standard OTEL_* variables
    apply (core/env.py; the exporter reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
    _CERTIFICATE itself)."""

    enabled: bool = Field(False, description="export traces (OTEL_TRACES_EXPORTER=otlp or none)")
    otlp_endpoint: str | None = Field(None, description=(
        "the collector's OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces; None: "
        "the exporter's default (http://localhost:4318/v1/traces)"))
    service_name: str = Field("learnx-ai", min_length=1, max_length=200,
                              description="the resource's service.name (OTEL_SERVICE_NAME)")
    sample_ratio: float = Field(1.0, ge=0, le=1, description=(
        "the share of requests traced, unless the caller's traceparent decided "
        "(OTEL_TRACES_SAMPLER_ARG)"))

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL; write e.g. "
                             "http://otel-collector:4318/v1/traces")
        return url
