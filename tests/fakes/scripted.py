"""In-process stand-ins for model backends: a provider that follows a script, and a complete fake
llama.cpp-like engine and embedding encoder (deterministic, fast) for LLMServer and the Embedder.

The engine and encoder also run under real Serve (the app builder takes them as factories), the
way Ray Serve LLM tests run its mock vLLM engine."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import EmbedderConfig, LocalModelConfig
from core.errors import ProviderError, ServiceError
from core.generation import (
    Delta,
    EngineBusy,
    EngineLoad,
    GenerationParams,
    RequestRejected,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
)


@dataclass(frozen=True)
class Say:
    """An answer, streamed a word at a time, then its tool calls (each a piece naming it, then its
    arguments a few characters at a time; `cut_in_calls`: the stream breaks after the first call's
    first piece). Usage defaults to word counts."""

    text: str = "A fine answer for the learner."
    finish_reason: str | None = None  # "stop", or "tool_calls" with calls
    usage: TokenUsage | None = None
    word_delay_s: float = 0.0  # a slow but steady stream: the pause after each word
    tool_calls: tuple[ToolCall, ...] = ()
    cut_in_calls: bool = False


@dataclass(frozen=True)
class Cut:
    """Some text, then the stream breaks (a provider outage mid-answer)."""

    text: str = "partial "


@dataclass(frozen=True)
class Hang:
    """No answer at all, or silence after `after_words` words."""

    after_words: int = 0


@dataclass(frozen=True)
class Call:
    """The model asks for function calls, (name, JSON arguments) each, after saying `text`: a call
    streams as a first piece with its id and name, then its arguments in two pieces."""

    calls: tuple[tuple[str, str], ...] = (("get_weather", '{"city": "Paris"}'),)
    text: str = ""


Step = Say | Cut | Hang | Call | ServiceError


@dataclass
class ScriptedProvider:
    """A Provider whose every call follows the next step of its script (`default` when empty)."""

    name: str
    script: list[Step] = field(default_factory=list)
    default: Step = field(default_factory=Say)
    calls: list[tuple[str, GenerationParams]] = field(default_factory=list)

    def enqueue(self, *steps: Step) -> None:
        self.script.extend(steps)

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        self.calls.append((model, params))
        step = self.script.pop(0) if self.script else self.default
        if isinstance(step, ServiceError):
            raise step
        if isinstance(step, Hang):
            for word in words(Say().text)[:step.after_words]:
                yield Delta(word, tokens=1)
            await asyncio.Event().wait()
        if isinstance(step, Cut):
            yield Delta(step.text, tokens=len(words(step.text)))
            raise ProviderError("stream cut", provider=self.name, model=model)
        if isinstance(step, Call):
            async for delta in _calls(step, params):
                yield delta
        if isinstance(step, Say):
            for word in words(step.text) if step.text or not step.tool_calls else []:
                yield Delta(word, tokens=1)
                await asyncio.sleep(step.word_delay_s)
            for index, call in enumerate(step.tool_calls):
                for delta in call_deltas(index, call):
                    yield delta
                    if step.cut_in_calls:
                        raise ProviderError("stream cut", provider=self.name, model=model)
            usage = step.usage or TokenUsage(prompt_words(params), len(words(step.text)))
            finish = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
            yield Delta("", finish_reason=finish, usage=usage)


def call_deltas(index: int, call: ToolCall) -> list[Delta]:
    """A call as providers stream it: a piece with its id and name, then its arguments."""
    arguments = [call.arguments[i:i + 5] for i in range(0, len(call.arguments), 5)]
    return [Delta("", tokens=1, tool_calls=(ToolCallDelta(index, call.id, call.name),)),
            *(Delta("", tokens=1, tool_calls=(ToolCallDelta(index, arguments=a),))
              for a in arguments)]


async def _calls(step: Call, params: GenerationParams) -> AsyncIterator[Delta]:
    said = words(step.text) if step.text else []
    for word in said:
        yield Delta(word, tokens=1)
    for index, (name, arguments) in enumerate(step.calls):
        half = len(arguments) // 2
        yield Delta("", tool_calls=(ToolCallDelta(index, id=f"call_{index}", name=name),))
        for piece in (arguments[:half], arguments[half:]):
            yield Delta("", tokens=1, tool_calls=(ToolCallDelta(index, arguments=piece),))
    yield Delta("", finish_reason="tool_calls",
                usage=TokenUsage(prompt_words(params), len(said) + 2 * len(step.calls)))


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def prompt_words(params: GenerationParams) -> int:
    return len((params.prompt or "").split()) + sum(len(m["content"].split())
                                                    for m in params.messages)


class FakeEngine:
    """A complete Engine: counted tokens, max_tokens, stop sequences, JSON that fits a schema, a
    call of the first tool whose call is required (arguments that fit its schema), and generation
    that stops when the caller closes the stream."""

    def __init__(self, text: str = "The fake engine explains it well.", delay_s: float = 0.0):
        self.text = text  # what it answers in text (JSON answers fit their schema)
        self._delay = delay_s
        self.generations = 0
        self.params: list[GenerationParams] = []  # each generation's, in order
        self.refusal: RequestRejected | None = None  # raised by every generation while set
        # Its queue as a llama.cpp replica's: a full one refuses everything, a long one (the
        # expected wait) refuses what may not wait that long.
        self.queue_full = False
        self.expected_wait_s = 0.0

    def check_health(self) -> None:
        return None

    def load(self) -> EngineLoad | None:
        return None

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        self.generations += 1
        self.params.append(params)
        if self.refusal is not None:
            raise self.refusal
        limit = params.max_queue_wait_s
        if self.queue_full or (limit is not None and self.expected_wait_s > limit):
            raise EngineBusy("8 requests wait for 8 slots", retry_after_s=max(1.0,
                                                                            self.expected_wait_s))
        if params.required_tools():
            tool = params.required_tools()[0]
            call = ToolCall(f"call_{self.generations}", tool.name,
                            json.dumps(example(tool.parameters)))
            for delta in call_deltas(0, call):
                yield delta
            yield Delta("", finish_reason="tool_calls",
                        usage=TokenUsage(prompt_words(params), len(call_deltas(0, call))))
            return
        pieces = (words(self.text) if params.json_schema is None
                  else [json.dumps(example(params.json_schema))])
        finish, sent = ("length" if len(pieces) > params.max_tokens else "stop"), 0
        for piece in pieces[:params.max_tokens]:
            if self._delay:
                await asyncio.sleep(self._delay)
            if any(stop in piece for stop in params.stop):
                finish = "stop"
                break
            sent += 1
            yield Delta(piece, tokens=1)
        yield Delta("", finish_reason=finish, usage=TokenUsage(prompt_words(params), sent))


def fake_engine(config: LocalModelConfig, models_path: str | None) -> FakeEngine:
    """An LLMServer engine_factory."""
    return FakeEngine()


def example(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small value that validates against `schema` (the subset our output schemas use)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {name: example(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_distinct(example(schema.get("items", {}), defs), i)
                for i in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return "x" * max(1, schema.get("minLength", 1))


def _distinct(value: Any, index: int) -> Any:
    return f"{value} {index}" if isinstance(value, str) else value


class FakeEncoder:
    """A deterministic unit vector per normalized text, like a real encoder's contract."""

    model = "all-minilm-l6-v2"
    dims = 384

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return np.stack([_vector(" ".join(t.split()), self.dims) for t in texts])


def _vector(text: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return vector / np.linalg.norm(vector)


def fake_encoder(config: EmbedderConfig, models_path: str | None) -> FakeEncoder:
    """An Embedder encoder_factory."""
    return FakeEncoder()
