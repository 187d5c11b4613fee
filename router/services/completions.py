"""Legacy text completions (POST /v1/completions): a raw prompt that the model continues as it is,
without a chat template. Only models that complete raw prompts are ranked (models/catalog.py:
local models, OpenAI's completion models, which the OpenAI provider calls through its own
completions API); the run is a chat completion's (ChatService: policy, breakers, fallback,
budgets; the meter: ledger and limits). A stream cut midway continues on the next candidate from
the prompt and the text so far."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from core.generation import Delta, GenerationParams
from router.run.attempts import Switch
from router.run.fallback import Run
from router.services.chat import ChatService
from router.services.generation import Answered, Streamed
from router.usage.meter import Meter
from router.wire.completions import (
    CompletionChoice,
    CompletionRequest,
    TextCompletion,
    completion_id,
)
from router.wire.replies import CompletionUsage
from router.wire.sse import peek


class CompletionsService:
    def __init__(self, chat: ChatService):
        self._chat = chat

    def params(self, request: CompletionRequest) -> GenerationParams:
        return GenerationParams(
            messages=[], prompt=request.text(), max_tokens=self._chat.max_tokens(request.max_tokens),
            temperature=request.temperature, top_p=request.top_p, stop=request.stop_list(),
            seed=request.seed)

    async def complete(self, request: CompletionRequest, meter: Meter) -> Answered:
        params = self.params(request)
        run = await self._chat.run_for(request, params, meter)
        completion, route = await run.complete(params)
        report = run.report()
        choice = CompletionChoice(text=completion.text,
                                  finish_reason=_finish_reason(completion.finish_reason))
        return Answered(TextCompletion(model=route.model, choices=[choice],
                                       usage=CompletionUsage.of(report.usage),
                                       route=report.route_info()).wire(), route.header())

    async def stream(self, request: CompletionRequest, meter: Meter) -> Streamed:
        params = self.params(request)
        run = await self._chat.run_for(request, params, meter)
        _, deltas = await peek(run.stream(params))
        return Streamed(_chunks(request, run, run.route.model, deltas), run.route.header())


async def _chunks(request: CompletionRequest, run: Run, model: str,
                  deltas: AsyncIterator[Delta | Switch]) -> AsyncIterator[dict[str, Any]]:
    """Text chunks, the finish chunk (with our route), then with `stream_options.include_usage`
    a chunk with no choices and the usage, as OpenAI streams them. A chunk with no choices and
    `route.fallback` marks where another model took over."""
    base = {"id": completion_id(), "model": model}
    async for delta in deltas:
        if isinstance(delta, Switch):
            yield TextCompletion(**base, choices=[], route={"fallback": {
                "from": delta.from_route, "to": delta.to_route, "error": delta.error}}).wire()
            continue
        if delta.text:
            yield TextCompletion(**base, choices=[CompletionChoice(text=delta.text,
                                                                   finish_reason=None)]).wire()
        if delta.finish_reason is not None:
            report = run.report()
            yield TextCompletion(**base, route=report.route_info(), choices=[CompletionChoice(
                text="", finish_reason=_finish_reason(delta.finish_reason))]).wire()
            if request.include_usage():
                yield TextCompletion(**base, choices=[], usage=CompletionUsage.of(report.usage)).wire()


def _finish_reason(reason: str) -> Literal["stop", "length", "content_filter"]:
    """OpenAI's finish reasons for text completions (any other a model gives is a stop)."""
    if reason == "length":
        return "length"
    return "content_filter" if reason == "content_filter" else "stop"


