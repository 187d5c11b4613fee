"""The Responses API's wire format (POST /v1/responses), for the stateless subset this service
serves: the request, the Response object and its stream events, shaped as OpenAI publishes them
(its `CreateResponse`, `Response` and `ResponseStreamEvent` schemas)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from router.wire.generation import MAX_TOKENS, GenerationRequest
from router.wire.openai import MAX_TOOLS
from router.wire.params import Fixed
from router.wire.rules import GROUP, Identifier, Wire, omitted


class FunctionTool(Wire):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments
    strict: bool | None = None


class ResponseStreamOptions(Wire):
    """Advisory: OpenAI pads events against side channels; these events are not padded."""

    include_obfuscation: bool | None = None


class FunctionChoice(Wire):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str


class TextFormat(Wire):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "if": {"properties": {"type": {"const": "json_schema"}}, "required": ["type"]},
        "then": {"required": ["name", "schema"],
                 "properties": {"name": {"type": "string"}, "schema": {"type": "object"}}}})

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _named_schema(self) -> TextFormat:
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise ValueError("a json_schema format needs its `name` and `schema`")
        return self


class TextParam(Wire):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat = Field(default_factory=TextFormat)


STATELESS = "this service keeps no state between responses: send the whole conversation in `input`"


_PART = {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": {"type": "string"}}}
_TEXT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _PART}]}
# The input items this stateless subset reads; other fields of an item (a replayed output item's
# id, status, ...) are ignored. A function_call_output must follow the function_call item with its
# call_id (a rule JSON Schema cannot state).
INPUT_ITEM = {"oneOf": [
    {"type": "object", "required": ["role", "content"], "properties": {
        "type": {"const": "message"}, "content": _TEXT,
        "role": {"enum": ["user", "system", "developer", "assistant"]}}},
    {"type": "object", "required": ["type", "call_id", "name", "arguments"], "properties": {
        "type": {"const": "function_call"}, "call_id": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1}, "arguments": {"type": "string"}}},
    {"type": "object", "required": ["type", "call_id", "output"], "properties": {
        "type": {"const": "function_call_output"}, "call_id": {"type": "string"},
        "output": _TEXT}}]}
READ = {"type", "role", "content", "call_id", "name", "arguments", "output", "text"}
# The deepest text read: input (0) > item (1) > content (2) > part (3) > text (4).
READ_DEPTH = 4


def read_fields(value: Any, depth: int = 0) -> Any:
    """The parts of input items the service reads (the text rule applies to those only). Deeper
    values are not text the service reads (router/services/responses_input.py refuses them), so they are
    not walked: nesting never costs more than these few levels."""
    if depth > READ_DEPTH:
        return None
    if isinstance(value, list):
        return [read_fields(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: read_fields(item, depth + 1) for key, item in value.items() if key in READ}
    return value


class ResponsesRequest(GenerationRequest):
    # Accepted only at these values (router/wire/params.py), each with what to do instead.
    FIXED: ClassVar[Fixed] = {
        "store": ((None, False), f"only false: {STATELESS}"),
        "previous_response_id": ((None,), STATELESS),
        "background": ((None, False), "only false: responses are generated while the request waits"),
        "include": ((None, []), "no extra output data is available"),
        "reasoning": ((None,), "reasoning options are not supported by these models"),
        "truncation": ((None, "disabled"), "only disabled: a prompt longer than the model's context "
                                           "is a 400"),
        "top_logprobs": ((None, 0), "log probabilities are not available"),
        "max_tool_calls": ((None,), "only function tools are supported: limit the calls you run"),
        "service_tier": ((None, "auto", "default"), "only auto or default"),
    }

    # Text, or input items (router/services/responses_input.py reads them, and refuses an empty list).
    input: str | Annotated[list[dict[str, Any]], Field(json_schema_extra={
        "items": INPUT_ITEM, "minItems": 1})]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, json_schema_extra=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice = "auto"
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    stream: bool | None = False
    # Advisory, as OpenAI treats them: `user` is the end user (budgets, rate limits, the ledger),
    # metadata is echoed back; the rest are hints to OpenAI's own infrastructure.
    user: Identifier | None = None
    group: Identifier | None = Field(None, description=GROUP)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None \
        = Field(None, max_length=16)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = Field(
        None, max_length=1024, description="Sent on to OpenAI models (otherwise one is derived "
        "from the shared prefix: tools and the instructions); ignored by the others.")
    stream_options: ResponseStreamOptions | None = None
    # Accepted only at the values FIXED allows (this service is stateless).
    store: Any = None
    previous_response_id: Any = None
    background: Any = None
    include: Any = None
    reasoning: Any = None
    truncation: Any = None
    top_logprobs: Any = None
    max_tool_calls: Any = None
    service_tier: Any = None
    prompt_cache: bool = Field(True, description=(
        "Our extension: false keeps the service from caching the shared prefix on purpose (no "
        "cache_control breakpoint of ours, no derived prompt_cache_key); a caller's own key is "
        "sent either way."))

    def end_user(self) -> str | None:
        return self.user

    def end_group(self) -> str | None:
        return self.group

    def streamed(self) -> bool:
        return bool(self.stream)

    @classmethod
    def _checked_text(cls, field: str, value: Any) -> Any:
        return read_fields(value) if field == "input" else value


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "in_progress"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str = ""
    status: ItemStatus = "in_progress"


OutputItem = Annotated[OutputMessage | FunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "in_progress"
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    store: bool = False
    temperature: float
    top_p: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = omitted()  # not nullable in OpenAI's schema
    user: str | None = omitted()  # not nullable in OpenAI's schema
    metadata: dict[str, str] = Field(default_factory=dict)
    # Our extension: which provider/model served the response and why, its cost, the path taken.
    route: dict[str, Any] | None = omitted()


class Event(BaseModel):
    sequence_number: int


class ResponseCreated(Event):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseInProgress(Event):
    type: Literal["response.in_progress"] = "response.in_progress"
    response: Response


class ResponseCompleted(Event):
    type: Literal["response.completed"] = "response.completed"
    response: Response


class ResponseIncomplete(Event):
    type: Literal["response.incomplete"] = "response.incomplete"
    response: Response


class ResponseFailed(Event):
    type: Literal["response.failed"] = "response.failed"
    response: Response


class OutputItemAdded(Event):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    output_index: int
    item: OutputItem


class OutputItemDone(Event):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    output_index: int
    item: OutputItem


class ContentPartAdded(Event):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText


class ContentPartDone(Event):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText


class TextDelta(Event):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDone(Event):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ArgumentsDelta(Event):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str


class ArgumentsDone(Event):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    name: str
    output_index: int
    arguments: str


class ErrorEvent(Event):
    """Sent before `response.failed` when a stream fails: the service's error type, code and
    message, as in its JSON errors."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None



class ResponseStreamEvent(RootModel[Annotated[
        ResponseCreated | ResponseInProgress | ResponseCompleted | ResponseIncomplete
        | ResponseFailed | OutputItemAdded | OutputItemDone | ContentPartAdded | ContentPartDone
        | TextDelta | TextDone | ArgumentsDelta | ArgumentsDone | ErrorEvent,
        Field(discriminator="type")]]):
    """One event of a streamed response (the SSE `data`; its `event:` line repeats `type`)."""
