"""A Responses request in the router's terms: its input items as chat messages, its function
tools, tool choice and text format as GenerationParams; whatever the stateless subset cannot
honour is a 400 naming it."""

from __future__ import annotations

from typing import Any

from core.errors import InvalidRequest
from core.schema import SchemaError, check_schema
from router.services.tools import (
    check_json_object,
    check_unique,
    checked_tool,
    named_choice,
    refuse_json_with_tools,
)
from router.wire.responses import FunctionChoice, ResponsesRequest, TextFormat

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = ("input_text", "output_text")


def item_count(request: ResponsesRequest) -> int:
    """The messages the request sends, counted before function calls merge into assistant turns."""
    items = 1 if isinstance(request.input, str) else len(request.input)
    return items + bool(request.instructions)


def messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """`instructions` as the system message, then the input items as chat messages: a function
    call joins the assistant turn before it (or starts one), its output is a `tool` message."""
    found: list[dict[str, Any]] = []
    if request.instructions:
        found.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        return [*found, {"role": "user", "content": request.input}]
    if not request.input:
        raise InvalidRequest("input: send text or at least one item", param="input")
    calls: set[str] = set()
    for index, item in enumerate(request.input):
        where = f"input.{index}"
        kind = item.get("type", "message")
        if kind == "message":
            found.append(_message(item, where))
        elif kind == "function_call":
            call = _function_call(item, where)
            calls.add(call["id"])
            if not found or found[-1]["role"] != "assistant":
                found.append({"role": "assistant", "content": ""})
            found[-1].setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            found.append(_call_output(item, where, calls))
        else:
            raise InvalidRequest(f"{where}.type: {kind!r} items are not supported; send messages "
                                 "(text), function_call and function_call_output items",
                                 param=f"{where}.type")
    return found


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(f"{where}.role: must be one of {', '.join(ROLES)}", param=f"{where}.role")
    return {"role": ROLES[role], "content": _text(item.get("content"), f"{where}.content")}


def _text(content: Any, where: str) -> str:
    """Text, or text parts (input_text, output_text) joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: must be text or a list of text parts", param=where)
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS \
                or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}.{index}: only text parts ({', '.join(TEXT_PARTS)}) "
                                 "are supported", param=f"{where}.{index}")
    return "".join(part["text"] for part in content)


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    fields = {name: item.get(name) for name in ("call_id", "name", "arguments")}
    for name, value in fields.items():
        if not isinstance(value, str) or (name != "arguments" and not value):
            raise InvalidRequest(f"{where}.{name}: required, a string", param=f"{where}.{name}")
    check_json_object(str(fields["arguments"]), f"{where}.arguments")
    return {"id": fields["call_id"], "type": "function",
            "function": {"name": fields["name"], "arguments": fields["arguments"]}}


def _call_output(item: dict[str, Any], where: str, calls: set[str]) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or call_id not in calls:
        raise InvalidRequest(f"{where}.call_id: no function_call item before it has call_id "
                             f"{call_id!r}", param=f"{where}.call_id")
    return {"role": "tool", "tool_call_id": call_id,
            "content": _text(item.get("output"), f"{where}.output")}


def tool_fields(request: ResponsesRequest) -> dict[str, Any]:
    """GenerationParams' tools, tool_choice and parallel_tool_calls, by chat's rules
    (router/services/tools.py)."""
    tools = tuple(checked_tool(tool, f"tools.{index}") for index, tool in enumerate(request.tools))
    check_unique((tool.name for tool in tools), "tools.{}.name")
    choice = _choice(request)
    json_format = request.text is not None and request.text.format.type != "text"
    refuse_json_with_tools(tools, choice, json_format, "text.format")
    if isinstance(request.tool_choice, FunctionChoice):
        tools, choice = named_choice(tools, choice)
    return {"tools": tools, "tool_choice": choice,
            "parallel_tool_calls": request.parallel_tool_calls is not False}


def _choice(request: ResponsesRequest) -> str:
    """None, auto, required or the function's name."""
    choice = request.tool_choice
    if isinstance(choice, str):
        if choice == "required" and not request.tools:
            raise InvalidRequest("tool_choice: required needs tools", param="tool_choice")
        return choice
    if choice.name not in {tool.name for tool in request.tools}:
        raise InvalidRequest(f"tool_choice.name: no tool is named {choice.name!r}",
                             param="tool_choice.name")
    return choice.name


def json_schema(request: ResponsesRequest) -> dict[str, Any] | None:
    """The output's schema ({} = any JSON object), bounded before any model sees it."""
    form = request.text.format if request.text is not None else TextFormat()
    if form.type == "text":
        return None
    return bounded(form.schema_ or {}, "text.format.schema")


def bounded(schema: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        check_schema(schema)
    except SchemaError as error:
        path = ".".join(filter(None, (where, error.where)))
        raise InvalidRequest(f"{path}: {error.problem}", param=path) from None
    return schema
