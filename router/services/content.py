"""The seed's generate-content API: personalized prompts from content/, run over the router's
ranking (so every provider, breaker and fallback applies), structured types validated, repaired once
and escalated to the large tier, streamed as {"content", "type", "metadata"} events that always end
with a terminal "done" or "error" event. Identical in-flight requests share one run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from content.profile import LearnerProfile, adapt, difficulty_level
from content.schemas import json_schema, validate
from content.structure import StructureDetector
from content.templates import TEMPLATE_VERSION, compile_messages, is_structured, repair_messages
from core.errors import InvalidRequest, ProviderError, ServiceError, status_of
from core.generation import GenerationParams
from core.pricing import prompt_estimate
from router.run.attempts import RunReport, Switch
from router.run.fallback import Run
from router.run.policy import resolve
from router.services.artifacts import ArtifactStore, artifact_key, validated
from router.services.chat import ChatService
from router.services.generation import Answered, Reply, Streamed
from router.services.singleflight import Event, Flight, SingleFlight
from router.usage.admission import Caller
from router.usage.meter import Meter
from router.wire.learnx import GenerateContentRequest
from router.wire.sse import peek

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Prepared:
    request: GenerateContentRequest
    messages: list[dict[str, str]]
    difficulty: int
    adaptation: str
    key: str
    profile: LearnerProfile


class ContentService:
    def __init__(self, chat: ChatService, artifacts: ArtifactStore | None = None,
                 by_group: bool = False):
        self._chat = chat
        self._artifacts = artifacts
        self._by_group = by_group  # artifacts.scope "group": each class keeps its own
        self.flights = SingleFlight()

    def _scope(self, caller: Caller) -> str:
        """Who shares an artifact: the caller's tenant, or its group in the tenant (artifacts.scope
        "group"; a request naming no group shares the tenant's)."""
        if self._by_group and caller.group is not None:
            return f"{caller.tenant}/{caller.group}"
        return caller.tenant

    def prepare(self, request: GenerateContentRequest) -> Prepared:
        profile = request.profile()
        try:
            level = difficulty_level(request.difficulty)
        except ValueError as error:
            raise InvalidRequest(str(error), param="difficulty") from None
        level, adaptation = adapt(level, request.recent_score)
        messages = compile_messages(request.content_type, request.content, profile, level)
        canonical = json.dumps([request.content, request.content_type, profile.canonical(), level,
                                TEMPLATE_VERSION, request.model, request.preferred_providers,
                                request.max_tokens], separators=(",", ":"))
        return Prepared(request, messages, level, adaptation,
                        hashlib.sha256(canonical.encode()).hexdigest(), profile)

    async def stream(self, request: GenerateContentRequest, meter: Meter) -> Reply:
        """Its events; a failure before any content (an error event first) as an HTTP error."""
        first, events = await peek(await self.events(self.prepare(request), meter))
        return _error_answer(first) if first["type"] == "error" else Streamed(events,
                                                                              failure=failure)

    async def complete(self, request: GenerateContentRequest, meter: Meter) -> Answered:
        collected = collect([e async for e in await self.events(self.prepare(request), meter)])
        return _error_answer(collected) if collected["type"] == "error" else Answered(collected)

    async def events(self, prepared: Prepared, meter: Meter) -> AsyncIterator[Event]:
        """This request's events, shared with identical requests of the same caller in flight (of
        the same tenant, when the result is an artifact to keep).

        Each request is admitted on its own first: its budget reserves the first run's estimate and
        decides its routes (or downgrades, or raises its own 402), and only requests with the same
        routes share a run. The run is billed to the request that started it, whose meter closes
        when the run ends (client_disconnected if that client left first); a request that joined is
        recorded as shared, or with the run's failure, or as client_disconnected, and billed
        nothing. A run whose every client left is cancelled. A stored artifact of the same inputs
        in the caller's tenant is replayed instead, recorded as cached and billed nothing."""
        artifact = await self._artifact(prepared, meter)
        if isinstance(artifact, list):
            meter.cached = True
            return _replayed(artifact)
        params = self._first_params(prepared)
        routes, allowance = await meter.admission.routes(self._chat.plan(
            prepared.request.model, list(prepared.request.preferred_providers), params),
            prompt_estimate(params) + params.max_tokens)
        # An artifact to keep is the tenant's: its learners share the run; else the caller's own.
        caller = meter.caller
        who = [f"tenant={self._scope(caller)}"] if artifact else [caller.key.id, caller.user]
        key = ":".join([prepared.key, *who, *(r.header() for r in routes)])
        if isinstance(artifact, str) and not self.flights.running(key):
            # A run of these inputs may have ended, its artifact kept, while this request was
            # admitted (its run leaves the flights only once the artifact is stored).
            kept = await self._kept_artifact(artifact)
            if kept is not None:
                meter.cached = True
                meter.track(NOTHING, allowance)  # its reservation, released when it closes
                return _replayed(kept)
        flight, leader = self.flights.join(key, lambda started: self._kept(artifact, self._generate(
            prepared, self._chat.start(routes, allowance, meter), meter, started)))
        if leader:
            meter.keep_open()  # the run closes it when it ends, which may be after its client left
        if leader:
            return self._follow(flight, prepared, meter, leader=True)
        meter.shared = True
        meter.track(NOTHING, allowance)  # its own reservation, released when it closes
        return self._follow(flight, prepared, meter, leader=False)

    async def _artifact(self, prepared: Prepared, meter: Meter) -> list[Event] | str | None:
        """The stored artifact of these inputs, else its key (None: not one to keep)."""
        if self._artifacts is None:
            return None
        key = artifact_key(prepared.request, prepared.profile, prepared.difficulty,
                           self._scope(meter.caller))
        if key is None:
            return None
        return await self._artifacts.get(key) or key

    async def _kept_artifact(self, key: str) -> list[Event] | None:
        return await self._artifacts.get(key) if self._artifacts is not None else None

    async def _kept(self, key: str | None, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """The run's events; once they end validated, stored under `key` (when there is one)."""
        seen: list[Event] = []
        async for event in events:
            seen.append(event)
            yield event
        if key is not None and self._artifacts is not None and validated(seen):
            await self._artifacts.put(key, seen)

    @staticmethod
    async def _follow(flight: Flight, prepared: Prepared, meter: Meter,
                      leader: bool) -> AsyncIterator[Event]:
        seq = 0
        try:
            async for event, _ in flight.subscribe():
                seq = event["metadata"]["seq"]
                yield _attributed(event, leader) if event["type"] == "done" else event
        except ServiceError as error:  # the run failed: this request's own error event
            meter.close(error)  # a joiner's record has the run's failure (the leader's: kept open)
            yield {"content": "", "type": "error", "metadata": {
                "seq": seq + 1, **_base(prepared), **error.body(), "status": status_of(error)}}

    def _first_params(self, prepared: Prepared) -> GenerationParams:
        request = prepared.request
        if is_structured(request.content_type):
            # Greedy: a structured answer gains nothing from sampling, and stays reproducible.
            return GenerationParams(prepared.messages, request.max_tokens or 900, temperature=0.0,
                                    json_schema=json_schema(request.content_type))
        return GenerationParams(prepared.messages, request.max_tokens or 700, temperature=0.4)

    async def _generate(self, prepared: Prepared, first: Run, meter: Meter,
                        flight: Flight) -> AsyncIterator[Event]:
        seq = 0
        failure: BaseException | None = None
        try:
            if is_structured(prepared.request.content_type):
                stream = self._structured(prepared, first, meter)
            else:
                stream = self._text(prepared, first)
            async for event in stream:
                seq += 1
                event["metadata"] = {"seq": seq, **_base(prepared), **event["metadata"]}
                yield event
        except ServiceError as error:
            failure = error
            raise
        except Exception as error:  # a bug: every subscriber still gets a typed error
            log.exception("content generation failed")
            failure = ServiceError("internal error while generating content")
            raise failure from error
        except BaseException as error:  # cancelled: every client left
            failure = error
            raise
        finally:
            if failure is None and 0 in flight.left_early:
                failure = asyncio.CancelledError()  # its client left; the run went on for others
            meter.release(failure)

    async def _text(self, prepared: Prepared, run: Run) -> AsyncIterator[Event]:
        request = prepared.request
        params = self._first_params(prepared)
        detector = StructureDetector()
        async for event in run.stream(params):
            if isinstance(event, Switch):
                yield {"content": "", "type": "fallback", "metadata": {
                    "from": event.from_route, "to": event.to_route, "error": event.error}}
                continue
            route = run.route
            if event.text:
                yield {"content": event.text, "type": request.content_type, "metadata": {
                    "structure": detector.feed(event.text), "provider": route.provider.name,
                    "model": route.model}}
            if event.finish_reason is not None:
                yield _done([run], {"structure": detector.finish(),
                                    "finish_reason": event.finish_reason})

    async def _structured(self, prepared: Prepared, first: Run,
                          meter: Meter) -> AsyncIterator[Event]:
        """Validate; repair once; then the same on the large tier; else a typed error."""
        request = prepared.request
        runs: list[Run] = []
        problems = "no output"
        for model in _escalation(request.model, self._chat):
            messages = prepared.messages
            for _ in range(2):  # the first answer, then one repair
                params = replace(self._first_params(prepared), messages=messages)
                run = first if not runs else await self._chat.run(
                    model, list(request.preferred_providers), params, meter)
                runs.append(run)
                completion, route = await run.complete(params)
                data, invalid = validate(request.content_type, completion.text)
                problems = invalid or problems
                if data is not None:
                    for item in _items(request.content_type, data):
                        yield {"content": json.dumps(item["value"]), "type": request.content_type,
                               "metadata": {"structure": item["structure"],
                                            "provider": route.provider.name, "model": route.model}}
                    yield _done(runs, {"data": data, "repaired": len(runs) > 1})
                    return
                messages = repair_messages(prepared.messages, completion.text, problems)
        raise ProviderError(f"no model produced valid {request.content_type} JSON ({problems})",
                            provider="router", model=request.model, retryable=False)


def failure(error: ServiceError) -> list[dict[str, Any]]:
    """A content stream's end when what follows it raised (a stopped run): its error event."""
    return [{"content": "", "type": "error", "metadata": {**error.body(),
                                                          "status": status_of(error)}}]


def _escalation(model: str, chat: ChatService) -> list[str]:
    """The requested model, then the large tier when it is stronger and something serves it."""
    _, tier = resolve(model, chat.catalog())
    large = any(c.tier == "large" and c.kind == "chat" for c in chat.available_models())
    return [model, "large"] if tier != "large" and large else [model]


def _items(content_type: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    key = {"quiz": "questions", "flashcards": "cards", "practice_problems": "problems"}[content_type]
    label = {"quiz": "question", "flashcards": "card", "practice_problems": "problem"}[content_type]
    return [{"value": value, "structure": {"kind": label, label: number}}
            for number, value in enumerate(data[key], 1)]


def _done(runs: list[Run], extra: dict[str, Any]) -> Event:
    reports = [run.report() for run in runs]
    routes = [r.route_info() for r in reports]
    prompt = sum(r.usage.prompt_tokens for r in reports)
    completion = sum(r.usage.completion_tokens for r in reports)
    cost = sum(r.cost_usd for r in reports)
    final = routes[-1]
    return {"content": "", "type": "done", "metadata": {
        "provider": final["provider"], "model": final["model"],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
        "cost_usd": round(cost, 10), "provider_path": routes, **extra}}


def _attributed(event: Event, leader: bool) -> Event:
    """The run's cost is billed to the request that started it; identical requests that joined
    the flight are told they shared it and are billed nothing."""
    metadata = dict(event["metadata"])
    metadata["single_flight"] = {"shared": not leader, "leader": leader}
    metadata["billed_usd"] = metadata["cost_usd"] if leader else 0.0
    return {**event, "metadata": metadata}


async def _replayed(events: list[Event]) -> AsyncIterator[Event]:
    """A stored artifact's events, its `done` saying it was replayed and is billed nothing."""
    for event in events:
        if event["type"] == "done":
            event = {**event, "metadata": {**event["metadata"], "cached": True, "billed_usd": 0.0,
                                           "single_flight": {"shared": False, "leader": False}}}
        yield event


def _base(prepared: Prepared) -> dict[str, Any]:
    return {"difficulty": prepared.difficulty, "difficulty_reason": prepared.adaptation,
            "template_version": TEMPLATE_VERSION}


class _Nothing:
    """No run: what a request that joined another's run reports (it is billed nothing)."""

    def report(self) -> RunReport:
        return RunReport(final=None)


NOTHING = _Nothing()


def _error_answer(event: Event) -> Answered:
    """An error event as an HTTP answer: with the error also at the top, in the one error shape
    every route answers."""
    metadata = event["metadata"]
    return Answered({"error": metadata["error"], **event}, status=metadata["status"])


def collect(events: list[Event]) -> dict[str, Any]:
    """The non-streamed response: the whole content and the terminal event's metadata."""
    terminal = events[-1]
    if terminal["type"] == "error":
        return terminal
    body = {"content": "".join(e["content"] for e in events if e["type"] not in ("done", "fallback")),
            "type": events[0]["type"] if events else terminal["type"],
            "metadata": terminal["metadata"]}
    if "data" in terminal["metadata"]:
        body["data"] = terminal["metadata"]["data"]
    return body

