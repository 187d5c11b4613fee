"""The HTTP API (FastAPI under @serve.ingress): OpenAI-compatible /v1/* and health routes."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time, in a class
# that Serve pickles by value.

import asyncio
import logging
import os
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.config import AppConfig
from deployments.embed.server import EmbedResult
from router import metrics, sse
from router.auth import ApiKeyAuth
from router.chat import ChatService, build_catalog, prepend
from router.content import ContentService
from router.content import collect as collect_content
from router.embeddings import EmbeddingService, openai_response, seed_response
from router.errors import InvalidRequest, ModelUnavailable, ServiceError, error_response
from router.health import BreakerSettings, Health
from router.limits import BodyLimit
from router.protocol import (
    ChatCompletionRequest,
    EmbeddingsRequest,
    GenerateContentRequest,
    ModelCard,
    ModelList,
    SeedEmbeddingsRequest,
)
from router.providers import build_providers
from router.ratelimit import MemoryBuckets, RateLimiter, RedisBuckets
from router.usage.budgets import Budgets, MemoryBudgetStore, RedisBudgetStore
from router.usage.ledger import Ledger
from router.usage.meter import Accounting, Meter
from router.usage.report import recent_records, usage_report
from router.usage.stores import open_store

log = logging.getLogger("ray.serve")

app = FastAPI(title="LEARN-X AI service", version="0.1.0")


@app.exception_handler(ServiceError)
async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
    return error_response(error)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    return error_response(InvalidRequest(validation_message(errors), param=_first_field(errors)))


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    response = error_response(InvalidRequest(str(error.detail)))
    response.status_code = error.status_code
    return response


def validation_message(errors: Any) -> str:
    """One readable line per problem, naming the field: `messages: Field required`."""
    lines = []
    for err in errors:
        if err.get("type") == "json_invalid":
            lines.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error')})")
            continue
        loc = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        lines.append(f"{loc}: {err.get('msg')}" if loc else f"request body: {err.get('msg')}")
    return "; ".join(lines) or "invalid request"


def _first_field(errors: Any) -> str | None:
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if loc:
            return ".".join(loc)
    return None


async def _check(handle: DeploymentHandle) -> None:
    await asyncio.wait_for(handle.check_health.remote(), timeout=5)


def build_accounting(config: AppConfig, catalog: list[Any]) -> Accounting:
    redis = None
    if config.redis_url:
        redis = aioredis.from_url(config.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    budgets = Budgets(config.budgets, RedisBudgetStore(redis) if redis else MemoryBudgetStore())
    limiter = RateLimiter(config.rate_limits, RedisBuckets(redis) if redis else MemoryBuckets())
    ledger = None
    if config.ledger.enabled:
        ledger = Ledger(open_store(config.ledger.database_url), config.ledger)
    return Accounting(ledger, budgets, limiter, catalog)


def warn_if_open(config: AppConfig) -> None:
    if not config.auth.enabled:
        log.warning("\n%s\nAUTH IS DISABLED (auth.enabled: false): every caller is let in without "
                    "an API key. For local development only.\n%s", "!" * 78, "!" * 78)


def request_id(request: Request) -> str | None:
    """The ledger's key: the caller's X-Request-Id, or the one the Serve ingress gave it (HAProxy
    adds it to requests and Serve returns it on the response)."""
    value = request.headers.get("x-request-id", "")
    return value[:128] if value.strip() else None


@serve.ingress(app)
class Router:
    def __init__(self, config: AppConfig, llm_handles: dict[str, DeploymentHandle],
                 embedder: DeploymentHandle | None = None):
        app.add_middleware(BodyLimit, max_bytes=config.router.max_body_bytes)
        app.add_middleware(ApiKeyAuth, config=config.auth)  # outermost: 401 before reading a body
        warn_if_open(config)
        self._llm_handles = llm_handles
        providers = build_providers(config, llm_handles, os.environ)
        self.health = Health(BreakerSettings(**config.router.breaker.model_dump()),
                             on_change=metrics.breaker_changed)
        catalog = build_catalog(config)
        self.chat = ChatService(config.router, providers, catalog, self.health)
        self.embeddings = EmbeddingService(config.embedder, embedder, "openai" in providers)
        self.accounting = build_accounting(config, catalog)
        self.content = ContentService(self.chat)
        self._embedder = embedder
        log.info("router ready; providers: %s", ", ".join(providers) or "none")

    async def _meter(self, request: Request, user: str | None, operation: str,
                     **details: Any) -> Meter:
        return await self.accounting.start(request.state.api_key, user, operation,
                                           request_id(request), **details)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request, body: ChatCompletionRequest) -> Response:
        meter = await self._meter(request, body.user, "chat.completions", streamed=body.stream)
        with meter.closed_on_error():
            if body.stream:
                chunks, route = await self.chat.stream(body, meter)
                return StreamingResponse(sse.encode_stream(meter.watch(chunks)),
                                         media_type=sse.MEDIA_TYPE,
                                         headers={**sse.HEADERS, "x-learnx-route": route})
            completion, route = await self.chat.complete(body, meter)
        meter.close()
        return JSONResponse(completion.model_dump(exclude_none=True),
                            headers={"x-learnx-route": route})

    @app.post("/api/v1/ai/generate-content")
    async def generate_content(self, request: Request, body: GenerateContentRequest) -> Response:
        meter = await self._meter(request, body.user_id, "generate-content",
                                  content_type=body.content_type, streamed=body.stream)
        with meter.closed_on_error():  # once events run, the content service closes the meter
            events = self.content.events(self.content.prepare(body), meter)
        if not body.stream:
            collected = collect_content([e async for e in events])
            status = collected["metadata"].get("status", 200) if collected["type"] == "error" else 200
            return JSONResponse(collected, status_code=status)
        first = await anext(events)  # a failure before any content is an HTTP error
        if first["type"] == "error":
            return JSONResponse(first, status_code=first["metadata"]["status"])
        return StreamingResponse(sse.encode_stream(prepend(first, events)),
                                 media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

    async def _embed(self, request: Request, user: str | None, texts: list[str],
                     model: str | None, **options: Any) -> EmbedResult:
        meter = await self._meter(request, user, "embeddings")
        with meter.closed_on_error():
            result = await self.embeddings.embed(texts, model, meter, **options)
        meter.close()
        return result

    @app.post("/v1/embeddings")
    async def openai_embeddings(self, request: Request, body: EmbeddingsRequest) -> JSONResponse:
        result = await self._embed(request, body.user, body.texts(), body.model,
                                   dimensions=body.dimensions)
        return JSONResponse(openai_response(result, body.encoding_format))

    @app.post("/api/v1/ai/embeddings")
    async def seed_embeddings(self, request: Request, body: SeedEmbeddingsRequest) -> JSONResponse:
        started = time.perf_counter()
        result = await self._embed(request, body.user_id, body.texts, body.model,
                                   use_cache=body.use_cache, deduplicate=body.deduplicate)
        return JSONResponse(seed_response(result, started))

    @app.get("/api/v1/ai/usage")
    @app.get("/v1/usage")
    async def usage(self, user_id: Annotated[str | None, Query(min_length=1)] = None,
                    since: Annotated[date | None, Query(alias="from")] = None,
                    until: Annotated[date | None, Query(alias="to")] = None) -> dict[str, Any]:
        """Usage and cost per user (or in total when user_id is omitted), by day, provider, model
        and operation, with the savings of local models; the last 30 days (UTC) by default."""
        ledger = self._ledger()
        until = until or datetime.now(UTC).date()
        since = since or until - timedelta(days=min(29, (until - date.min).days))
        if since > until:
            raise InvalidRequest("'from' must not be after 'to'", param="from")
        report = await ledger.read(lambda store: usage_report(store, user_id, since, until))
        if user_id is not None:
            report["budget"] = await self.accounting.budgets.status(user_id)
        report["ledger"] = {"buffered": ledger.buffered, "dropped": ledger.stats.dropped,
                            "write_failures": ledger.stats.failures}
        return report

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        chat = [ModelCard(id=c.name, owned_by=c.provider) for c in self.chat.available_models()
                if c.kind == "chat"]
        embedding = [ModelCard(id=m, owned_by=p) for m, p in self.embeddings.models()]
        return ModelList(data=chat + embedding)

    @app.get("/api/v1/ai/usage/records")
    async def usage_records(self, user_id: Annotated[str, Query(min_length=1)],
                            limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        """A user's latest ledger records (one per request), newest first."""
        records = await self._ledger().read(lambda store: recent_records(store, user_id, limit))
        return {"user_id": user_id, "records": records}

    def _ledger(self) -> Ledger:
        if self.accounting.ledger is None:
            raise ModelUnavailable("the usage ledger is disabled in this deployment")
        return self.accounting.ledger

    async def __del__(self) -> None:
        """Serve's graceful shutdown: write what is still buffered."""
        if self.accounting.ledger is not None:
            await self.accounting.ledger.close()

    @app.get("/health")
    @app.get("/api/v1/ai/health")
    async def health(self) -> dict[str, str]:
        """Liveness: the router answers."""
        return {"status": "ok"}

    @app.get("/ready")
    @app.get("/api/v1/ai/ready")
    async def ready(self) -> JSONResponse:
        """Readiness: every local model replica and the embedder answer their health checks."""
        handles = dict(self._llm_handles)
        if self._embedder is not None:
            handles["embedder"] = self._embedder
        names = sorted(handles)
        results = await asyncio.gather(*(_check(handles[n]) for n in names),
                                       return_exceptions=True)
        models = {n: "ok" if r is None else f"unavailable ({type(r).__name__})"
                  for n, r in zip(names, results, strict=True)}
        ok = all(r is None for r in results)
        return JSONResponse({"status": "ready" if ok else "not_ready", "models": models},
                            status_code=200 if ok else 503)

    @app.get("/health/providers")
    @app.get("/api/v1/ai/health/providers")
    async def provider_health(self) -> dict[str, Any]:
        """Circuit breakers of this router replica, per provider/model that has been called."""
        return {"providers": sorted(self.chat.providers()), "breakers": self.health.snapshot()}

    @app.post("/health/providers/reset")
    @app.post("/api/v1/ai/health/providers/reset")
    async def reset_provider_health(self) -> dict[str, str]:
        """Close every breaker of this replica (operators, after fixing a provider's key)."""
        self.health.reset()
        return {"status": "reset"}
