"""The Responses API (POST /v1/responses), stateless: a request becomes GenerationParams and runs
as a chat completion does (ChatService: policy, breakers, fallback, budgets; the meter: ledger and
limits), and the run's deltas become a Response object, or the stream of semantic events that
builds one (`response.created` ... `response.completed`)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from core.errors import RateLimited, ServiceError
from core.generation import Delta, GenerationParams, ToolCallDelta
from core.ids import new_id
from router.run.attempts import RunReport, Switch
from router.run.fallback import Run
from router.services import responses_input as given
from router.services.chat import ChatService
from router.services.generation import Answered, Streamed
from router.usage.meter import Meter
from router.wire.responses import (
    ArgumentsDelta,
    ArgumentsDone,
    ContentPartAdded,
    ContentPartDone,
    ErrorEvent,
    Event,
    FunctionCall,
    IncompleteDetails,
    InputTokensDetails,
    OutputItemAdded,
    OutputItemDone,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponsesRequest,
    ResponseUsage,
    TextDelta,
    TextDone,
)
from router.wire.sse import peek

TEMPERATURE = 0.7  # when the request sets none, as chat completions
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def item_id(prefix: str) -> str:
    return new_id(f"{prefix}_")


class Assembly:
    """One response as it is generated: its output items built from the run's deltas (a message
    for the text, a function_call item per tool call), and the stream events that build them,
    numbered in order. Items stay open until the run finishes, then close in output order."""

    def __init__(self, response: Response):
        self.response = response
        self._numbers = itertools.count()
        self._message: OutputMessage | None = None
        self._calls: dict[int, FunctionCall] = {}  # by the deltas' tool-call index

    def _event(self, kind: type[Event], **fields: Any) -> dict[str, Any]:
        """The event as sent: a snapshot, since the response and its items change later."""
        return kind(sequence_number=next(self._numbers), **fields).model_dump(mode="json",
                                                                                by_alias=True)

    def _index(self, item: OutputMessage | FunctionCall) -> int:
        return next(i for i, found in enumerate(self.response.output) if found is item)

    def start(self) -> list[dict[str, Any]]:
        return [self._event(ResponseCreated, response=self.response),
                self._event(ResponseInProgress, response=self.response)]

    def feed(self, delta: Delta) -> list[dict[str, Any]]:
        events = self._text(delta.text) if delta.text else []
        for piece in delta.tool_calls:
            events += self._call(piece)
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = []
        message = self._message
        if message is None:
            message = self._message = OutputMessage(id=item_id("msg"))
            self.response.output.append(message)
            events.append(self._event(OutputItemAdded, output_index=self._index(message),
                                      item=message))
            message.content.append(OutputText())
            events.append(self._event(ContentPartAdded, item_id=message.id,
                                      output_index=self._index(message), part=OutputText()))
        message.content[0].text += text
        return [*events, self._event(TextDelta, item_id=message.id,
                                     output_index=self._index(message), delta=text)]

    def _call(self, piece: ToolCallDelta) -> list[dict[str, Any]]:
        events = []
        call = self._calls.get(piece.index)
        if call is None:
            call = FunctionCall(id=item_id("fc"), call_id=piece.id or item_id("call"),
                                name=piece.name or "")
            self._calls[piece.index] = call
            self.response.output.append(call)
            events.append(self._event(OutputItemAdded, output_index=self._index(call), item=call))
        elif piece.name and not call.name:
            call.name = piece.name
        if piece.arguments:
            call.arguments += piece.arguments
            events.append(self._event(ArgumentsDelta, item_id=call.id,
                                      output_index=self._index(call), delta=piece.arguments))
        return events

    def finish(self, finish_reason: str, report: RunReport) -> list[dict[str, Any]]:
        """Close every item, then the response: completed, or incomplete (max_output_tokens, a
        content filter), with its usage and route."""
        reason = INCOMPLETE.get(finish_reason)
        events = []
        for index, item in enumerate(self.response.output):
            item.status = "incomplete" if reason else "completed"
            if isinstance(item, OutputMessage):
                part = item.content[0]
                events += [self._event(TextDone, item_id=item.id, output_index=index, text=part.text),
                           self._event(ContentPartDone, item_id=item.id, output_index=index,
                                       part=part)]
            else:
                events.append(self._event(ArgumentsDone, item_id=item.id, name=item.name,
                                          output_index=index, arguments=item.arguments))
            events.append(self._event(OutputItemDone, output_index=index, item=item))
        response = self.response
        usage = report.usage
        response.usage = ResponseUsage(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens, input_tokens_details=InputTokensDetails(
                cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens))
        response.route = report.route_info()
        if reason:
            response.status = "incomplete"
            response.incomplete_details = IncompleteDetails(reason=reason)
            return [*events, self._event(ResponseIncomplete, response=response)]
        response.status, response.completed_at = "completed", int(time.time())
        return [*events, self._event(ResponseCompleted, response=response)]

    def fail(self, error: ServiceError) -> list[dict[str, Any]]:
        """A stream's end when the run failed after it started: an `error` event with the
        service's error, then `response.failed`."""
        self.response.status = "failed"
        code = "rate_limit_exceeded" if isinstance(error, RateLimited) else "server_error"
        self.response.error = ResponseError(code=code, message=error.message)
        return [self._event(ErrorEvent, code=error.code or error.error_type, message=error.message,
                            param=error.param),
                self._event(ResponseFailed, response=self.response)]


class ResponsesService:
    def __init__(self, chat: ChatService):
        self._chat = chat

    def params(self, request: ResponsesRequest) -> GenerationParams:
        self._chat.check_messages(given.item_count(request), "input")
        return GenerationParams(
            messages=given.messages(request),
            max_tokens=self._chat.max_tokens(request.max_output_tokens, "max_output_tokens"),
            temperature=_temperature(request), top_p=_top_p(request),
            json_schema=given.json_schema(request), prompt_cache=request.prompt_cache,
            prompt_cache_key=request.prompt_cache_key, **given.tool_fields(request))

    async def complete(self, request: ResponsesRequest, meter: Meter) -> Answered:
        """The whole response. A JSON answer that broke off starts over on the next candidate."""
        params = self.params(request)
        run = await self._chat.run_for(request, params, meter)
        assembly = None
        async for event in run.stream(params, restartable=True):
            route = run.route
            if isinstance(event, Switch):
                assembly = None if event.restart else assembly
                continue
            assembly = assembly or Assembly(_response(request, route.model))
            assembly.feed(event)
            if event.finish_reason is not None:
                assembly.finish(event.finish_reason, run.report())
                assembly.response.model = route.model
                return Answered(assembly.response.model_dump(mode="json"), route.header())
        raise AssertionError("a run ends with a finish or raises")

    async def stream(self, request: ResponsesRequest, meter: Meter) -> Streamed:
        """Its semantic events, named (`event:` lines), ending with their own terminal event."""
        params = self.params(request)
        run = await self._chat.run_for(request, params, meter)
        _, deltas = await peek(run.stream(params))
        assembly = Assembly(_response(request, run.route.model))
        return Streamed(_events(assembly, run, deltas), run.route.header(), named=True,
                        failure=assembly.fail, done=False)


async def _events(assembly: Assembly, run: Run,
                  deltas: AsyncIterator[Delta | Switch]) -> AsyncIterator[dict[str, Any]]:
    for event in assembly.start():
        yield event
    async for delta in deltas:
        if isinstance(delta, Switch):
            continue  # the text goes on in the same message; the final route names the path
        for event in assembly.feed(delta):
            yield event
        if delta.finish_reason is not None:
            for event in assembly.finish(delta.finish_reason, run.report()):
                yield event


def _response(request: ResponsesRequest, model: str) -> Response:
    """The response as created: in progress, no output yet; the request's settings echoed."""
    text = request.text.model_dump(mode="json", by_alias=True, exclude_none=True) \
        if request.text else {"format": {"type": "text"}}
    choice = request.tool_choice
    return Response(
        id=item_id("resp"), created_at=int(time.time()), model=model,
        instructions=request.instructions, max_output_tokens=request.max_output_tokens,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        temperature=_temperature(request), top_p=_top_p(request), text=text,
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
        tools=[tool.model_dump(mode="json") for tool in request.tools], user=request.user,
        metadata=request.metadata or {})


def _temperature(request: ResponsesRequest) -> float:
    return TEMPERATURE if request.temperature is None else request.temperature


def _top_p(request: ResponsesRequest) -> float:
    return 1.0 if request.top_p is None else request.top_p
