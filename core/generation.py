"""Generation in normalized terms: the parameters of a chat generation and the deltas it streams.

Shared by the engines that host local models (deployments/llm/) and the router's providers, which
speak the same GenerationParams/Delta to local and hosted models alike."""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None  # OpenAI's strict schema adherence, passed on where it exists


@dataclass(frozen=True)
class ToolCall:
    """A finished call: its id, the function's name, its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a call being streamed: `index` tells calls apart; the first piece of a call has
    its id and name, the rest add to its arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


# A tool_choice that is a mode, not a function's name.
TOOL_CHOICE_MODES = ("none", "auto", "required")


@dataclass(frozen=True)
class CacheBreakpoint:
    """A caller's `cache_control` on a content part: the prompt up to the end of that part (the
    part's end in message `message`'s text, `offset` characters in) is cached for `ttl`."""

    message: int
    offset: int
    ttl: str = "5m"


@dataclass(frozen=True)
class GenerationParams:
    # OpenAI's chat message shape: {"role", "content"} where content is text; an assistant turn may
    # carry "tool_calls" ([{"id", "type": "function", "function": {"name", "arguments"}}]) and a
    # "tool" turn answers one with "tool_call_id".
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # constrain output to JSON ({} = any JSON object)
    tools: tuple[Tool, ...] = ()
    # One of TOOL_CHOICE_MODES ("auto": the model decides; "required": at least one call), or the
    # name of the function to call
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    # A raw prompt (legacy text completions): the model continues this text as it is, without a
    # chat template, and `messages` is empty. Engines and providers that cannot are never routed it.
    prompt: str | None = None
    # Where a local engine queues it: higher first; within a priority, the groups waiting share
    # the slots by tokens (deployments/llm/fairqueue.py), each group's requests in order of arrival.
    priority: int = 0
    # The group whose share of a local engine's slots it takes (the caller's class within its
    # tenant); None: the requests that name none share one group.
    group: str | None = None
    # A local engine refuses the request at once (EngineBusy) when it expects it to wait longer
    # than this for a slot, so the router can hand it to the next candidate; None: it waits.
    max_queue_wait_s: float | None = None
    # Prompt caching: unless False, the provider adapter caches the shared prefix (tools and the
    # leading system messages) on purpose where it is long enough (Anthropic: a cache_control
    # breakpoint at its end; OpenAI: a prompt_cache_key derived from it). The caller's own key and
    # breakpoints are passed on either way.
    prompt_cache: bool = True
    prompt_cache_key: str | None = None
    cache_breakpoints: tuple[CacheBreakpoint, ...] = ()
    # The W3C trace context of the router's attempt (core/tracing.py): a local replica's span
    # continues it, a hosted provider sends it on as the traceparent header.
    trace: dict[str, str] | None = field(default=None, compare=False)

    def required_tools(self) -> tuple[Tool, ...]:
        """The tools of which the answer must call one or more: every tool with tool_choice
        "required", the named one, none with "auto" or "none" (the model may answer in text)."""
        if self.tool_choice in ("auto", "none"):
            return ()
        if self.tool_choice == "required":
            return self.tools
        return tuple(t for t in self.tools if t.name == self.tool_choice)


@dataclass(frozen=True)
class TokenUsage:
    """A generation's tokens as its provider counted them, in OpenAI's convention: `prompt_tokens`
    is every prompt token, those read from the provider's prompt cache (`cached_tokens`) and those
    written to it (`cache_write_tokens`) included (Anthropic's `input_tokens` counts neither: its
    adapter adds them); `completion_tokens` includes `reasoning_tokens`. `cache_write_1h_tokens`
    are the cache writes kept for an hour (Anthropic's `ttl: "1h"`), priced apart from the
    5-minute ones."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens neither read from nor written to a cache: billed at the input rate."""
        return max(0, self.prompt_tokens - self.cached_tokens - self.cache_write_tokens)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class Delta:
    """A piece of generated text. The last delta of a generation has finish_reason and usage."""

    text: str
    finish_reason: str | None = None  # "tool_calls" when the model asks for calls
    usage: TokenUsage | None = None
    tokens: int | None = None  # tokens in `text`, when the engine or provider says
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    usage: TokenUsage
    tool_calls: tuple[ToolCall, ...] = ()


class ToolCallAssembler:
    """Streamed tool call pieces put back together into whole calls, by index."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, pieces: tuple[ToolCallDelta, ...]) -> None:
        for piece in pieces:
            call = self._calls.setdefault(piece.index, ["", "", ""])
            call[0] = piece.id or call[0]
            call[1] = piece.name or call[1]
            call[2] += piece.arguments

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(*self._calls[index]) for index in sorted(self._calls))


class RequestRejected(ValueError):
    """The request itself is what the engine cannot serve: the caller's fault, a 400 naming `param`;
    never retried, never counted against the engine's health. Engines raise its subclasses where
    they turn the caller's input into the model's (templates, tokens, grammars), so the router
    tells these from outages by type alone."""

    param: ClassVar[str] = "messages"


class PromptTooLong(RequestRejected):
    """The prompt does not fit the model's context window."""


class RawPromptTooLong(PromptTooLong):
    """A raw prompt (GenerationParams.prompt) does not fit the model's context window."""

    param = "prompt"


class InvalidMessages(RequestRejected):
    """The messages cannot become a prompt: text that is not valid Unicode, or a conversation the
    model's chat template refuses (e.g. roles out of the order it expects)."""


class InvalidSchema(RequestRejected):
    """The JSON schema cannot become a grammar: beyond core.schema's bounds, or refused by the
    engine's grammar compiler."""

    param = "response_format.json_schema"


@dataclass(frozen=True)
class EngineLoad:
    """A local engine's queue as it stands: requests waiting, slots generating, slots in all, and
    how long a request arriving now is expected to wait for a slot."""

    queued: int
    busy: int
    slots: int
    estimated_wait_s: float
    # Since the engine started: prompt tokens computed, and read from a cached prefix instead.
    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0


class EngineBusy(Exception):
    """The engine cannot start the request soon enough: its slots are busy and its queue is full or
    longer than the request may wait. Load, not an outage: the router moves on without counting it
    against the model's health, and answers 429 with Retry-After when nothing else can serve."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.retry_after_s))


class InvalidTools(RequestRejected):
    """The tools' parameter schemas cannot become a grammar (see InvalidSchema)."""

    param = "tools"
