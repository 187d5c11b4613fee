"""What the OpenAPI document states in words because JSON Schema cannot, taught to schemathesis:
a generated "valid" request that breaks one of these rules is not valid, so its positive cases keep
them (negative cases are left alone). Loaded by the CLI through SCHEMATHESIS_HOOKS.

- The usage report's `from` is not after its `to`.
- `dimensions` only with a text-embedding-3 model (the local model has 384).
- `response_format.json_schema.schema`, Responses' `text.format.schema` and every tool's
  `parameters` are within the supported subset and bounds (core/schema.py, the same check the
  router makes).
- A `tool_choice` naming a function names one of the request's tools; `required` needs tools.
- A Responses `function_call_output` item follows the `function_call` item with its `call_id`,
  and a `function_call` item's `arguments` are a JSON object as text.
- A `seed` is within int64 (the document states the bounds; a generator comparing as floats
  crosses them by one).
- A tool's `parameters` are a schema of type object; callable tools exclude a JSON answer format.
- A `Last-Event-ID` header is an event id of the pattern the document states (the coverage phase
  sends header values that do not keep it).
- A budget level's term has its `start` and `end`, in order, and only a term has them;
  `learner_cap_usd` is a group's.
- Tool names are unique. Chat conversations with tool turns (calls and their results, whose
  pairing rules the document states in words) are left to tests/router/services/test_tools.py."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import schemathesis
from schemathesis import GenerationMode

from core.schema import SchemaError, check_schema
from router.http.openapi import EVENT_ID_PATTERN


def _dates_in_order(case: Any) -> bool:
    query = case.query or {}
    until = query.get("to") or date.today().isoformat()  # the service says today by UTC
    return not (query.get("from") and query["from"] > until)


def _dimensions_where_supported(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    return body.get("dimensions") is None or str(body.get("model", "")).startswith(
        "text-embedding-3")


def _schemas(body: dict[str, Any]) -> list[Any]:
    """The caller's JSON schemas in a request: response formats and tool parameters."""
    found = [((body.get("response_format") or {}).get("json_schema") or {}).get("schema"),
             ((body.get("text") or {}).get("format") or {}).get("schema")]
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            found.append((tool.get("function") or tool).get("parameters"))
    return [schema for schema in found if schema is not None]


def _schema_supported(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    try:
        for schema in _schemas(body):
            check_schema(schema)
    except SchemaError:
        return False
    return True


def _tool_choice_names_a_tool(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    choice = body.get("tool_choice")
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if choice == "required":
        return bool(tools)
    if not isinstance(choice, dict):
        return True
    name = (choice.get("function") or choice).get("name")
    return name in {(t.get("function") or t).get("name") for t in tools}


def _outputs_answer_calls(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    items = body.get("input") if isinstance(body.get("input"), list) else []
    calls: set[Any] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            calls.add(item.get("call_id"))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            return False
    return True


def _tool_names_unique(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    names = [(t.get("function") or t).get("name") for t in tools]
    return len(names) == len(set(map(str, names)))


def _no_tool_turns(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    return not any(isinstance(m, dict) and (m.get("tool_calls") is not None or m.get("role") == "tool"
                                            or m.get("tool_call_id") is not None)
                   for m in messages)


def _arguments_are_objects(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    items = body.get("input") if isinstance(body.get("input"), list) else []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "function_call":
            try:
                if not isinstance(json.loads(item.get("arguments")), dict):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def _tools_as_chat_takes_them(case: Any) -> bool:
    """Parameters of type object; no JSON answer format with tools that may be called."""
    body = case.body if isinstance(case.body, dict) else {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    for tool in tools:
        parameters = (tool.get("function") or tool).get("parameters")
        if isinstance(parameters, dict) and parameters.get("type", "object") != "object":
            return False
    formats = [(body.get("response_format") or {}).get("type"),
               ((body.get("text") or {}).get("format") or {}).get("type")]
    json_format = any(kind not in (None, "text") for kind in formats)
    return not (tools and json_format and body.get("tool_choice") != "none")


def _event_id_well_formed(case: Any) -> bool:
    value = {k.lower(): v for k, v in (case.headers or {}).items()}.get("last-event-id")
    return value is None or re.fullmatch(EVENT_ID_PATTERN, str(value)) is not None


def _seed_in_int64(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    seed = body.get("seed")
    return not isinstance(seed, int) or -(2**63) <= seed < 2**63


def _budget_as_a_level_takes_it(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    path = str(getattr(case, "path", "") or getattr(case.operation, "path", ""))
    if not path.startswith("/api/v1/ai/budgets/"):
        return True
    if body.get("learner_cap_usd") is not None and "/groups/" not in path:
        return False
    dated = body.get("start") is not None or body.get("end") is not None
    if body.get("period") != "term":
        return not dated
    start, end = body.get("start"), body.get("end")
    return isinstance(start, str) and isinstance(end, str) and start <= end


RULES = (_budget_as_a_level_takes_it, _event_id_well_formed, _seed_in_int64, _tool_names_unique,
         _arguments_are_objects, _tools_as_chat_takes_them, _no_tool_turns, _outputs_answer_calls,
         _dates_in_order, _dimensions_where_supported, _schema_supported, _tool_choice_names_a_tool)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    return all(rule(case) for rule in RULES)
