"""The HTTP API (FastAPI under @serve.ingress): OpenAI-compatible /v1/* and health routes."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time, in a class
# that Serve pickles by value.

import asyncio
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.config import AppConfig
from router import metrics, sse
from router.chat import ChatService, build_catalog, prepend
from router.content import ContentService
from router.content import collect as collect_content
from router.embeddings import EmbeddingService, openai_response, seed_response
from router.errors import InvalidRequest, ServiceError, error_response
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


@serve.ingress(app)
class Router:
    def __init__(self, config: AppConfig, llm_handles: dict[str, DeploymentHandle],
                 embedder: DeploymentHandle | None = None):
        app.add_middleware(BodyLimit, max_bytes=config.router.max_body_bytes)
        self._llm_handles = llm_handles
        providers = build_providers(config, llm_handles, os.environ)
        self.health = Health(BreakerSettings(**config.router.breaker.model_dump()),
                             on_change=metrics.breaker_changed)
        self.chat = ChatService(config.router, providers, build_catalog(config), self.health)
        self.embeddings = EmbeddingService(config.embedder, embedder, "openai" in providers)
        self.content = ContentService(self.chat)
        self._embedder = embedder
        log.info("router ready; providers: %s", ", ".join(providers) or "none")

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> Response:
        if body.stream:
            chunks, route = await self.chat.stream(body)
            return StreamingResponse(sse.encode_stream(chunks), media_type=sse.MEDIA_TYPE,
                                     headers={**sse.HEADERS, "x-learnx-route": route})
        completion, route = await self.chat.complete(body)
        return JSONResponse(completion.model_dump(exclude_none=True),
                            headers={"x-learnx-route": route})

    @app.post("/api/v1/ai/generate-content")
    async def generate_content(self, body: GenerateContentRequest) -> Response:
        events = self.content.events(self.content.prepare(body))
        if not body.stream:
            collected = collect_content([e async for e in events])
            status = collected["metadata"].get("status", 200) if collected["type"] == "error" else 200
            return JSONResponse(collected, status_code=status)
        first = await anext(events)  # a failure before any content is an HTTP error
        if first["type"] == "error":
            return JSONResponse(first, status_code=first["metadata"]["status"])
        return StreamingResponse(sse.encode_stream(prepend(first, events)),
                                 media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

    @app.post("/v1/embeddings")
    async def openai_embeddings(self, body: EmbeddingsRequest) -> JSONResponse:
        result = await self.embeddings.embed(body.texts(), body.model, dimensions=body.dimensions)
        return JSONResponse(openai_response(result, body.encoding_format))

    @app.post("/api/v1/ai/embeddings")
    async def seed_embeddings(self, body: SeedEmbeddingsRequest) -> JSONResponse:
        started = time.perf_counter()
        result = await self.embeddings.embed(body.texts, body.model, body.use_cache,
                                             body.deduplicate)
        return JSONResponse(seed_response(result, started))

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        chat = [ModelCard(id=c.name, owned_by=c.provider) for c in self.chat.available_models()
                if c.kind == "chat"]
        embedding = [ModelCard(id=m, owned_by=p) for m, p in self.embeddings.models()]
        return ModelList(data=chat + embedding)

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
