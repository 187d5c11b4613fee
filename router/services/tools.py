"""Tool calling at the router: a request's tools, tool_choice and conversation checked and turned
into GenerationParams terms, and the ToolCalling a request needs of the model that serves it.

Checked here once for every provider, so that all of them see the same valid requests: function
names (OpenAI's rule), parameter schemas within core.schema's bounds (as response_format schemas
are), a tool_choice that names a defined tool, and a conversation whose tool results each answer a
call of the assistant turn right before them, every call answered (OpenAI and Anthropic both refuse
anything else)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from core.errors import InvalidRequest
from core.generation import TOOL_CHOICE_MODES, GenerationParams, Tool
from core.schema import SchemaError, check_schema
from models.registry import ToolCalling
from router.wire.openai import ChatCompletionRequest, ChatMessage, NamedToolChoice


class Function(Protocol):
    """A function tool's definition, as chat (`tools.N.function`) and Responses (`tools.N`) send it."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    @property
    def parameters(self) -> dict[str, Any] | None: ...
    @property
    def strict(self) -> bool | None: ...


def checked_tool(function: Function, where: str) -> Tool:
    """A function definition as a Tool, its parameters a bounded JSON schema of an object (`where`
    is the definition's path in the request, for errors: `tools.0.function`)."""
    parameters = function.parameters if function.parameters is not None else {
        "type": "object", "properties": {}}
    path = f"{where}.parameters"
    if parameters.get("type", "object") != "object":
        raise InvalidRequest(f"{path}.type: a function's parameters must be a JSON schema of type "
                             "'object'", param=f"{path}.type")
    try:
        check_schema(parameters)
    except SchemaError as error:
        at = ".".join(filter(None, (path, error.where)))
        raise InvalidRequest(f"{at}: {error.problem}", param=at) from None
    return Tool(function.name, function.description or "", {"type": "object", **parameters},
                function.strict)


def tool_fields(request: ChatCompletionRequest) -> dict[str, Any]:
    """GenerationParams' tools, tool_choice and parallel_tool_calls for `request`."""
    tools = tuple(checked_tool(t.function, f"tools.{i}.function")
                  for i, t in enumerate(request.tools or []))
    names = [t.name for t in tools]
    check_unique(names, "tools.{}.function.name")
    choice = _choice(request, names)
    json_format = request.response_format is not None and request.response_format.type != "text"
    refuse_json_with_tools(tools, choice, json_format, "response_format")
    if isinstance(request.tool_choice, NamedToolChoice):
        tools, choice = named_choice(tools, choice)
    return {"tools": tools, "tool_choice": choice,
            "parallel_tool_calls": request.parallel_tool_calls is not False}


def check_unique(names: Iterable[str], where: str) -> None:
    """Each function named once (`where` formats with the tool's index: `tools.{}.name`)."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            at = where.format(index)
            raise InvalidRequest(f"{at}: {name!r} is defined twice", param=at)
        seen.add(name)


def refuse_json_with_tools(tools: tuple[Tool, ...], choice: str, json_format: bool,
                           param: str) -> None:
    """A JSON answer format and callable tools exclude each other (Anthropic would drop the tools)."""
    if tools and choice != "none" and json_format:
        raise InvalidRequest(f"{param}: a JSON format (json_object / json_schema) cannot be "
                             "combined with tools: drop one, or send tool_choice 'none'",
                             param=param)


def named_choice(tools: tuple[Tool, ...], name: str) -> tuple[tuple[Tool, ...], str]:
    """The tools and tool_choice for a choice naming a function. A function named like a mode
    ("auto"): call it, and only it."""
    if name in TOOL_CHOICE_MODES:
        return tuple(t for t in tools if t.name == name), "required"
    return tools, name


def _choice(request: ChatCompletionRequest, names: list[str]) -> str:
    choice = request.tool_choice
    if choice is None:
        return "auto" if names else "none"
    if choice == "none" or (choice == "auto" and not names):
        return choice
    if not names:
        raise InvalidRequest(f"tool_choice {_shown(choice)} needs tools: define them in `tools`",
                             param="tool_choice")
    if isinstance(choice, str):
        return choice
    if choice.function.name not in names:
        raise InvalidRequest(f"tool_choice names {choice.function.name!r}, which is not among the "
                             f"tools ({', '.join(names)})", param="tool_choice.function.name")
    return choice.function.name


def _shown(choice: object) -> str:
    return repr(choice) if isinstance(choice, str) else "naming a function"


def tool_calling(params: GenerationParams) -> ToolCalling:
    """What the request needs of the model that serves it (router/run/policy.py)."""
    if not params.tools or params.tool_choice == "none":
        return "none"
    return "auto" if params.tool_choice == "auto" else "required"


def chat_messages(messages: list[ChatMessage], tools: bool) -> list[dict[str, Any]]:
    """The conversation in GenerationParams' terms, checked: tool results answer the calls of the
    assistant turn before them, every call is answered, and a conversation that calls tools
    sends their definitions (`tools`: Anthropic needs them, and tool_choice 'none' keeps them from
    being called again)."""
    pending: dict[str, int] = {}  # calls awaiting their results -> the index of the calling turn
    seen: set[str] = set()
    converted = []
    for index, message in enumerate(messages):
        if pending and message.role != "tool":
            raise _unanswered(pending, f"messages.{index}")
        converted.append(_message(message, index, pending, seen))
    if pending:
        raise _unanswered(pending, "messages")
    if seen and not tools:
        raise InvalidRequest("the conversation has tool calls: send the tools they call in `tools` "
                             "(with tool_choice 'none' for a text answer)", param="tools")
    return converted


def _message(message: ChatMessage, index: int, pending: dict[str, int],
             seen: set[str]) -> dict[str, Any]:
    where = f"messages.{index}"
    if message.tool_calls and message.role != "assistant":
        raise InvalidRequest(f"{where}.tool_calls: only assistant messages carry tool calls",
                             param=f"{where}.tool_calls")
    if message.tool_call_id is not None and message.role != "tool":
        raise InvalidRequest(f"{where}.tool_call_id: only tool messages answer tool calls",
                             param=f"{where}.tool_call_id")
    converted: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                 "content": message.text()}
    if message.role == "tool":
        converted["tool_call_id"] = _answered(message.tool_call_id, where, pending)
    for number, call in enumerate(message.tool_calls or []):
        at = f"{where}.tool_calls.{number}"
        if call.id in seen:
            raise InvalidRequest(f"{at}.id: the call id {call.id!r} is used twice in the "
                                 "conversation", param=f"{at}.id")
        check_json_object(call.function.arguments, f"{at}.function.arguments")
        seen.add(call.id)
        pending[call.id] = index
    if message.tool_calls:
        converted["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls]
    return converted


def _answered(call_id: str | None, where: str, pending: dict[str, int]) -> str:
    if call_id is None:
        raise InvalidRequest(f"{where}.tool_call_id: a tool message must name the call it answers",
                             param=f"{where}.tool_call_id")
    if call_id not in pending:
        raise InvalidRequest(f"{where}.tool_call_id: {call_id!r} is not a call of the assistant "
                             "turn before this message (tool results follow the assistant turn "
                             "that made the calls, one result per call)",
                             param=f"{where}.tool_call_id")
    del pending[call_id]
    return call_id


def _unanswered(pending: dict[str, int], where: str) -> InvalidRequest:
    turn = min(pending.values())
    return InvalidRequest(f"{where}: the tool calls of messages.{turn} are not all answered: send a "
                          f"tool message for each of {', '.join(sorted(pending))} right after it",
                          param=where)


def check_json_object(text: str, where: str) -> None:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: must be a JSON object as text (the arguments the model "
                             "generated)", param=where)
