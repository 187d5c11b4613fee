"""The routes. Each handler finds the app's services on `request.app.state` (router/http/api.py)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from core.config import ApiKeyConfig
from core.errors import InvalidRequest, ModelUnavailable, RunNotFound
from deployments.embed.shared import EmbedResult
from router.http.auth import require_admin
from router.http.generated import generated, metered, services
from router.http.openapi import GENERATION, TIERED, errors, streamed
from router.http.runs import RunStream, owner, runs_of
from router.services.embeddings import openai_response, seed_response
from router.usage.ledger import Ledger
from router.usage.record import Operation
from router.usage.report import recent_records, usage_report
from router.usage.scopes import Scope
from router.wire.completions import CompletionRequest, TextCompletion
from router.wire.learnx import (
    ContentEvent,
    GenerateContentRequest,
    GeneratedContent,
    IsoDate,
    Readiness,
    SeedEmbeddings,
    SeedEmbeddingsRequest,
)
from router.wire.openai import ChatCompletionRequest, EmbeddingsRequest
from router.wire.replies import (
    ChatCompletion,
    ChatCompletionChunk,
    EmbeddingList,
    ModelList,
    ModelObject,
    RunStatus,
)
from router.wire.responses import Response as ResponseObject
from router.wire.responses import ResponsesRequest, ResponseStreamEvent

routes = APIRouter()
# Any POST may carry an Idempotency-Key (400 malformed, 409 still running, 422 reused) and a body.
ADMIN_POST = (400, 401, 403, 409, 413, 422)


@routes.post("/v1/chat/completions", responses={
    **streamed(ChatCompletion, ChatCompletionChunk,
               "The completion, or with `stream: true` its chunks (SSE, ending with `data: [DONE]`; "
               "with `stream_options.include_usage` the last chunk has `usage` and no choices)."),
    **errors(*TIERED)})
async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
    return await generated(request, services(request).chat, body, Operation.CHAT)


@routes.post("/v1/completions", responses={
    **streamed(TextCompletion, TextCompletion,
               "The completion, or with `stream: true` its chunks (SSE, ending with `data: [DONE]`; "
               "a chunk's `finish_reason` is null until the last)."),
    **errors(*TIERED)})
async def completions(request: Request, body: CompletionRequest) -> Response:
    """Legacy text completions: one raw prompt, continued as it is by a local model or an OpenAI
    completion model; streamed (SSE, ends with `data: [DONE]`) or not."""
    return await generated(request, services(request).completions, body, Operation.COMPLETIONS)


@routes.post("/v1/responses", responses={
    **streamed(ResponseObject, ResponseStreamEvent,
               "The response, or with `stream: true` its semantic events (SSE with `event:` lines: "
               "`response.created` ... `response.completed`, or `error` then `response.failed`)."),
    **errors(*TIERED)})
async def responses(request: Request, body: ResponsesRequest) -> Response:
    """OpenAI's Responses API, stateless: text or input items (messages, function calls and their
    outputs), instructions, function tools, text formats; streamed as its semantic events."""
    return await generated(request, services(request).responses, body, Operation.RESPONSES)


@routes.post("/api/v1/ai/generate-content", responses={
    **streamed(GeneratedContent, ContentEvent,
               "With `stream: true` (the default) the events (SSE): content, `fallback`, and last "
               "`done` or `error`; with `stream: false` the whole content."),
    **errors(*TIERED)})
async def generate_content(request: Request, body: GenerateContentRequest) -> Response:
    return await generated(request, services(request).content, body, Operation.CONTENT,
                           content_type=body.content_type)


RunId = Annotated[str, Path(description="the run's id: an event id's part before `:`",
                            pattern=r"^run_[0-9a-f]{32}$")]


@routes.get("/v1/runs/{run_id}/events", responses={
    200: {"description": "The run's events after `after` (SSE, as the stream that started it sent "
                         "them, ids included), then the live ones to its end.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **errors(400, 401, 404, 409, 410, 503)})
async def run_events(request: Request, run_id: RunId,
                     after: Annotated[int, Query(ge=0, le=999_999_999, description=(
                         "the number of the last event received (after `:` in its id); 0: "
                         "from the start"))] = 0) -> RunStream:
    """Resume a stream by its run (for clients that cannot send `Last-Event-ID`)."""
    runs = runs_of(request)
    if runs is None:
        raise RunNotFound(run_id, param="run_id")
    return RunStream.resumed(await runs.resume(owner(request.state.api_key), run_id, None, after))


@routes.post("/v1/runs/{run_id}/cancel", response_model=RunStatus,
             responses=errors(400, 401, 404, 409, 413, 422, 503))
async def cancel_run(request: Request, run_id: RunId) -> RunStatus:
    """Stop a run: its generation is cancelled, its stream ends with a `run_stopped` error event,
    and every later resume is a 409. A run that already ended keeps its status."""
    runs = runs_of(request)
    if runs is None:
        raise RunNotFound(run_id, param="run_id")
    status = await runs.stop(owner(request.state.api_key), run_id)
    return RunStatus(id=run_id, status=status)


async def embed(request: Request, user: str | None, group: str | None, texts: list[str],
                model: str | None, **options: Any) -> EmbedResult:
    async with metered(request, user, Operation.EMBEDDINGS, group=group) as meter:
        return await services(request).embeddings.embed(texts, model, meter, **options)


@routes.post("/v1/embeddings", response_model=EmbeddingList, responses=errors(*GENERATION))
async def openai_embeddings(request: Request, body: EmbeddingsRequest) -> JSONResponse:
    result = await embed(request, body.user, body.group, body.texts(), body.model,
                         dimensions=body.dimensions)
    return JSONResponse(openai_response(result, body.encoding_format))


@routes.post("/api/v1/ai/embeddings", response_model=SeedEmbeddings,
              responses=errors(*GENERATION))
async def seed_embeddings(request: Request, body: SeedEmbeddingsRequest) -> JSONResponse:
    started = time.perf_counter()
    result = await embed(request, body.user_id, body.group_id, body.texts, body.model,
                         use_cache=body.use_cache, deduplicate=body.deduplicate)
    return JSONResponse(seed_response(result, started))


@routes.get("/api/v1/ai/usage", responses=errors(400, 401, 403, 503))
@routes.get("/v1/usage", responses=errors(400, 401, 403, 503))
async def usage(request: Request, user_id: Annotated[str | None, Query(min_length=1)] = None,
                group: Annotated[str | None, Query(min_length=1, max_length=256, description=(
                    "a group (a class) of the key's tenant: its learners' requests"))] = None,
                since: Annotated[IsoDate | None, Query(alias="from")] = None,
                until: Annotated[IsoDate | None, Query(
                    alias="to", description="not before `from`")] = None) -> dict[str, Any]:
    """Usage and cost of a user, of a group, of a user in a group (or in total when both are
    omitted: an admin key), by day, provider, model and operation, with the savings of local models;
    the last 30 days (UTC) by default. With a user or a group, `budgets`: each budget their
    requests spend (tenant, group, the learner's share, user) in its current period."""
    if user_id is None and group is None:
        require_admin(request.state.api_key, "reading the usage of all users (no user_id)")
    accounting = services(request).accounting
    ledger = _ledger(request)
    until = until or datetime.now(UTC).date()
    since = since or until - timedelta(days=min(29, (until - date.min).days))
    if since > until:
        raise InvalidRequest("'from' must not be after 'to'", param="from")
    key: ApiKeyConfig = request.state.api_key
    keys = _tenant_keys(request)
    report = await ledger.read(lambda store: usage_report(store, user_id, since, until, keys,
                                                          group))
    scope = Scope(key.tenant_id, user_id, group)
    if user_id is not None:
        report["budget"] = await accounting.budget_status(scope)
    if user_id is not None or group is not None:
        report["budgets"] = await accounting.budgets.by_level(scope)
    report["ledger"] = accounting.ledger_status()
    return report


@routes.get("/api/v1/ai/usage/records", responses=errors(400, 401, 503))
async def usage_records(request: Request, user_id: Annotated[str, Query(min_length=1)],
                        limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """A user's latest ledger records (one per request), newest first: of the key's tenant (an
    admin key: of every tenant)."""
    keys = _tenant_keys(request)
    records = await _ledger(request).read(lambda store: recent_records(store, user_id, limit, keys))
    return {"user_id": user_id, "records": records}


def _tenant_keys(request: Request) -> list[str] | None:
    """The ids of the keys of the caller's tenant, whose users it may read; None for an admin key
    (every tenant's)."""
    key: ApiKeyConfig = request.state.api_key
    if key.role == "admin":
        return None
    return services(request).config.auth.keys_of(key.tenant_id) or [key.id]


def _ledger(request: Request) -> Ledger:
    ledger = services(request).accounting.ledger
    if ledger is None:
        raise ModelUnavailable("the usage ledger is disabled in this deployment")
    return ledger


@routes.get("/v1/models", responses=errors(401))
async def models(request: Request) -> ModelList:
    found = services(request)
    chat = [ModelObject(id=c.name, owned_by=c.provider) for c in found.chat.available_models()
            if c.kind != "embedding"]
    embedding = [ModelObject(id=m, owned_by=p) for m, p in found.embeddings.models()]
    return ModelList(data=chat + embedding)


@routes.get("/health")
@routes.get("/api/v1/ai/health")
async def health() -> dict[str, str]:
    """Liveness: the router answers."""
    return {"status": "ok"}


@routes.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "not ready"}})
@routes.get("/api/v1/ai/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "not ready"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: every local model replica and the embedder answer their health checks (the
    fan-out's result is reused for 1.5 s)."""
    ok, models = await services(request).readiness.results()
    return JSONResponse({"status": "ready" if ok else "not_ready", "models": models},
                        status_code=200 if ok else 503)


@routes.get("/health/providers", responses=errors(401))
@routes.get("/api/v1/ai/health/providers", responses=errors(401))
async def provider_health(request: Request) -> dict[str, Any]:
    """Circuit breakers per provider/model that has been called, of this router replica and of the
    Embedder replica that answers (OpenAI embeddings, the Redis vector cache), and the first-token
    limits learned per model."""
    found = services(request)
    try:
        embedder: dict[str, Any] = await asyncio.wait_for(found.embeddings.breakers(), timeout=5)
    except Exception as error:  # the router's own view still answers
        embedder = {"error": f"unavailable ({type(error).__name__})"}
    return {"providers": sorted(found.chat.providers()), "breakers": found.breakers.snapshot(),
            "embedder_breakers": embedder, "first_token_limits": found.first_token.snapshot()}


@routes.post("/health/providers/reset", responses=errors(*ADMIN_POST))
@routes.post("/api/v1/ai/health/providers/reset", responses=errors(*ADMIN_POST))
async def reset_provider_health(request: Request) -> dict[str, str]:
    """Close every breaker of this router replica and of the Embedder replica that answers
    (operators, after fixing a provider's key)."""
    require_admin(request.state.api_key, "resetting the circuit breakers")
    found = services(request)
    found.breakers.reset()
    try:
        await asyncio.wait_for(found.embeddings.reset_breakers(), timeout=5)
    except Exception as error:
        return {"status": "reset", "embedder": f"unavailable ({type(error).__name__})"}
    return {"status": "reset", "embedder": "reset"}
