"""Tool calls on local models, shared by the engines: the conversation as text turns for chat
templates that know no tools, the JSON schema a required call must follow (a grammar for llama.cpp,
guided decoding for vLLM), and that JSON turned into OpenAI-style call deltas as it is generated.

A required call (tool_choice "required" or a named function) is generated as
`{"name": <one of the tools>, "arguments": <that tool's parameters>}`: one call per answer. Given a
list, SmolLM2 added a spurious second call to 3 of 4 answers to one-intent prompts (README: Tool
calling), and one call is always a valid answer under parallel_tool_calls."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from core.generation import Delta, GenerationParams, ToolCallDelta
from core.schema import DEFS_PREFIX, rewrite_subschemas

TOOLS_PROMPT = ("You can call functions. To call one, answer with only a JSON object "
                '{"name": <the function\'s name>, "arguments": <its arguments>}. The functions:')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def text_messages(params: GenerationParams) -> list[dict[str, str]]:
    """The conversation as plain text turns: the tools the model may call described in the system
    message, earlier calls told in prose by the assistant, and each result as a user turn that names
    its function (with SmolLM2 this phrasing let 2 of 3 final answers use the result, where calls
    rendered as their JSON let none: the model repeated the call)."""
    names = {call["id"]: call["function"]["name"]
             for message in params.messages for call in message.get("tool_calls") or []}
    turns = [_text_turn(message, names) for message in params.messages]
    tools = params.required_tools() or (params.tools if params.tool_choice != "none" else ())
    if not tools:
        return turns
    described = "\n".join([TOOLS_PROMPT, *(f"- {t.name}: {t.description} Arguments (JSON "
                                           f"schema): {json.dumps(t.parameters)}" for t in tools)])
    if turns and turns[0]["role"] == "system":
        return [{"role": "system", "content": f"{turns[0]['content']}\n\n{described}"}, *turns[1:]]
    return [{"role": "system", "content": described}, *turns]


def _text_turn(message: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    if message["role"] == "tool":
        name = names.get(message["tool_call_id"], "the function")
        return {"role": "user", "content": f"Here is what {name} returned: {message['content']}"}
    calls = [f"I called {c['function']['name']} with {c['function']['arguments']}."
             for c in message.get("tool_calls") or []]
    return {"role": message["role"],
            "content": "\n".join(filter(None, [message["content"], *calls]))}


def call_schema(params: GenerationParams) -> dict[str, Any]:
    """The schema of a required call: `{"name", "arguments"}` for one of the required tools, each
    tool's `$defs` moved to the root under a name of its own."""
    defs: dict[str, Any] = {}
    options = []
    for number, tool in enumerate(params.required_tools()):
        arguments = _hoisted(tool.parameters, f"tool{number}-", defs)
        options.append({"type": "object", "properties": {"name": {"const": tool.name},
                                                         "arguments": arguments},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def _hoisted(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its `$defs`, which join `defs` renamed with `prefix` (refs follow)."""

    def renamed(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFS_PREFIX):
            return {**node, "$ref": DEFS_PREFIX + prefix + ref[len(DEFS_PREFIX):]}
        return node

    rewritten = rewrite_subschemas(schema, renamed)
    defs.update({prefix + name: sub for name, sub in rewritten.pop("$defs", {}).items()})
    return rewritten


# The JSON a call's grammar produces, up to where its arguments begin (after a previous call's
# closing brace, or a list's bracket and commas).
_HEADER = re.compile(r'[\s\[\],}]*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:')


class ToolCallStream:
    """Generated call JSON (`{"name": ..., "arguments": {...}}`, one or more) as OpenAI streams
    calls: a call's first delta once its name is complete, with a new id; then its arguments as
    they arrive. `complete` once the arguments of every call begun are whole."""

    def __init__(self) -> None:
        self._pending = ""  # text not yet turned into deltas
        self._index = -1
        self._in_arguments = False
        self._depth = 0  # of brackets in the arguments
        self._in_string = False
        self._escaped = False

    @property
    def complete(self) -> bool:
        return self._index >= 0 and not self._in_arguments

    def feed(self, text: str) -> tuple[ToolCallDelta, ...]:
        self._pending += text
        found: list[ToolCallDelta] = []
        while self._pending:
            if not self._in_arguments:
                header = _HEADER.match(self._pending)
                if header is None:
                    break  # the rest of the header is still to come
                self._index, self._in_arguments = self._index + 1, True
                found.append(ToolCallDelta(self._index, new_call_id(), header.group(1)))
                self._pending = self._pending[header.end():]
            if self._depth == 0:
                self._pending = self._pending.lstrip()  # before the arguments' opening brace
            end, whole = self._scan()
            if end:
                found.append(ToolCallDelta(self._index, arguments=self._pending[:end]))
                self._pending = self._pending[end:]
            if not whole:
                break
            self._in_arguments = False
        return joined(found)

    def _scan(self) -> tuple[int, bool]:
        """How much of the pending text belongs to the arguments, and whether they end there."""
        for position, char in enumerate(self._pending):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return position + 1, True
        return len(self._pending), False


def to_calls(delta: Delta, calls: ToolCallStream) -> Delta:
    """A delta of a required call's generated JSON as call pieces; a generation that stopped once
    its call was whole finishes with "tool_calls"."""
    pieces = calls.feed(delta.text)
    finish = "tool_calls" if delta.finish_reason == "stop" and calls.complete \
        else delta.finish_reason
    return Delta("", finish, delta.usage, delta.tokens, pieces)


def joined(pieces: list[ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    """Consecutive pieces of one call as one (a name and the first of its arguments together)."""
    joined: list[ToolCallDelta] = []
    for piece in pieces:
        if joined and joined[-1].index == piece.index and piece.id is None:
            last = joined[-1]
            piece = ToolCallDelta(last.index, last.id, last.name, last.arguments + piece.arguments)
            joined.pop()
        joined.append(piece)
    return tuple(joined)
