"""Tracing's setup: the config and OpenTelemetry's standard variables, turning it off, and log records
made while a span is current carrying its ids."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.trace import format_trace_id

from core.config import load_config
from core.env import ConfigError
from core.tracing import running, start_tracing
from core.tracing_config import TracingConfig
from tests.fakes.otlp import OtlpReceiver

DEV = {"auth": {"enabled": False}}


def test_off_by_default() -> None:
    assert not load_config(DEV, environ={}).tracing.enabled
    assert start_tracing(load_config(DEV, environ={}).tracing, "router") is None


def test_opentelemetry_s_variables_configure_it() -> None:
    tracing = load_config(DEV, environ={
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_SERVICE_NAME": "learnx-ai-eu", "OTEL_TRACES_SAMPLER_ARG": "0.25"}).tracing
    assert tracing == TracingConfig(enabled=True, otlp_endpoint="http://collector:4318/v1/traces",
                                    service_name="learnx-ai-eu", sample_ratio=0.25)
    specific = load_config({**DEV, "tracing": {"enabled": True}}, environ={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
        "OTEL_TRACES_EXPORTER": "none"}).tracing
    assert specific.otlp_endpoint == "http://traces:4318/v1/traces" and not specific.enabled


def test_a_wrong_variable_or_setting_says_what_to_write() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER='console' \(write otlp or none\)"):
        load_config(DEV, environ={"OTEL_TRACES_EXPORTER": "console"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG='2'"):
        load_config(DEV, environ={"OTEL_TRACES_SAMPLER_ARG": "2"})
    with pytest.raises(ConfigError, match="not an http"):
        load_config({**DEV, "tracing": {"otlp_endpoint": "collector:4318"}}, environ={})


def test_otel_sdk_disabled_turns_it_off(otlp: OtlpReceiver) -> None:
    on = TracingConfig(enabled=True, otlp_endpoint=otlp.url)
    assert start_tracing(on, "router", {"OTEL_SDK_DISABLED": "true"}) is None
    tracing = start_tracing(on, "router", {"OTEL_SDK_DISABLED": "false"})
    assert tracing is not None
    tracing.shutdown()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logs_made_in_a_span_carry_its_trace_id(otlp: OtlpReceiver) -> None:
    tracing = start_tracing(TracingConfig(enabled=True, otlp_endpoint=otlp.url), "router", {})
    assert tracing is not None
    logger, handler = logging.getLogger("ray.serve"), Records()
    logger.addHandler(handler)
    try:
        with running(tracing.span("work")) as span:
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
        tracing.shutdown()
    inside, outside = handler.records
    assert inside.trace_id == format_trace_id(span.get_span_context().trace_id)  # type: ignore[attr-defined]
    assert not hasattr(outside, "trace_id")
    # Serve's JSON encoding (logging_config: {encoding: JSON}) writes a record's extra fields.
    from ray._common.formatters import JSONFormatter

    line = json.loads(JSONFormatter().format(inside))
    assert (line["trace_id"], line["span_id"]) == (inside.trace_id, inside.span_id)  # type: ignore[attr-defined]
