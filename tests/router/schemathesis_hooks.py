"""What the OpenAPI document states in words because JSON Schema cannot, taught to schemathesis:
a generated "valid" request that breaks one of these rules is not valid, so its positive cases keep
them (negative cases are left alone). Loaded by the CLI through SCHEMATHESIS_HOOKS.

- The usage report's `from` is not after its `to`.
- `dimensions` only with a text-embedding-3 model (the local model has 384).
- `response_format.json_schema.schema` is within the supported subset and bounds (core/schema.py,
  the same check the router makes)."""

from __future__ import annotations

from datetime import date
from typing import Any

import schemathesis
from schemathesis import GenerationMode

from core.schema import SchemaError, check_schema


def _dates_in_order(case: Any) -> bool:
    query = case.query or {}
    until = query.get("to") or date.today().isoformat()  # the service says today by UTC
    return not (query.get("from") and query["from"] > until)


def _dimensions_where_supported(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    return body.get("dimensions") is None or str(body.get("model", "")).startswith(
        "text-embedding-3")


def _schema_supported(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    found = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    try:
        check_schema(found if found is not None else {})
    except SchemaError:
        return False
    return True


RULES = (_dates_in_order, _dimensions_where_supported, _schema_supported)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    return all(rule(case) for rule in RULES)
