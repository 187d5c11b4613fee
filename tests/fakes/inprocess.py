"""The API in process: built by the same factory as under Serve, on scripted hosted providers, the
fake engine as the local model and the Embedder on the fake encoder, called through
httpx.ASGITransport. Milliseconds per test; the end-to-end suite covers the real models."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from core.config import AppConfig
from core.generation import Delta, GenerationParams
from deployments.embed.server import Embedder
from deployments.embed.shared import EmbedRequest, EmbedResult
from deployments.llm.engine import Engine
from router.http.api import build_api
from router.http.auth import hash_key
from router.run.providers.local import engine_error
from router.services.wiring import Services, build_services
from router.usage.record import COLUMNS
from tests.fakes.catalog import CATALOG
from tests.fakes.scripted import FakeEngine, ScriptedProvider, fake_encoder

KEY = "lx_inprocess-key-0123456789"
ADMIN_KEY = "lx_inprocess-admin-0123456789"
LOCAL = "smollm2-135m"

BASE: dict[str, Any] = {
    "local_models": [{"name": LOCAL, "llama_cpp": {"n_ctx": 2048}}],
    "router": {"first_token_timeout_s": 2, "idle_timeout_s": 1, "request_timeout_s": 10,
               "max_retries": 1, "retry_backoff_s": 0.001, "max_body_bytes": 100_000},
    "auth": {"api_keys": [{"id": "backend", "sha256": hash_key(KEY)},
                          {"id": "ops", "sha256": hash_key(ADMIN_KEY), "role": "admin"}]},
    "rate_limits": {"user_requests_per_minute": None, "user_tokens_per_minute": None},
    "ledger": {"flush_interval_s": 0.01},
    "catalog": CATALOG,
}


class EngineProvider:
    """The local provider with engines in process instead of Serve handles (or, named otherwise, a
    hosted provider that answers like them)."""

    def __init__(self, engines: dict[str, Engine], name: str = "local"):
        self.engines = engines
        self.name = name

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        try:
            async for delta in self.engines[model].generate(params):
                yield delta
        except Exception as error:  # what LocalProvider makes of a replica's error
            raise engine_error(self.name, model, error) from None


class DirectEmbedder:
    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.calls = 0  # requests that crossed the (Serve) hop to the Embedder

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        self.calls += 1
        return await self.embedder.embed(request)

    async def breakers(self) -> dict[str, dict[str, object]]:
        return await self.embedder.breakers()

    async def reset_breakers(self) -> None:
        await self.embedder.reset_breakers()


@dataclass
class InProcess:
    client: httpx.AsyncClient
    services: Services
    engine: FakeEngine
    openai: ScriptedProvider
    anthropic: ScriptedProvider
    embedder: Embedder

    async def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, json=body, **kwargs)

    async def records(self, user: str | None = None) -> list[dict[str, Any]]:
        """The ledger's records, oldest first (written first)."""
        ledger = self.services.accounting.ledger
        assert ledger is not None
        await ledger.flush()
        rows = await ledger.read(lambda store: store.fetch(
            "SELECT * FROM usage_records ORDER BY ts", []))
        found = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        return [r for r in found if user is None or r["user_id"] == user]

    async def close(self) -> None:
        await self.client.aclose()
        await self.services.close()
        await self.embedder.aclose()


def config(tmp_path: Any, **overrides: Any) -> AppConfig:
    args = copy.deepcopy(BASE)
    args["ledger"]["database_url"] = f"sqlite:///{tmp_path}/usage.db"
    for key, value in overrides.items():
        args[key] = {**args.get(key, {}), **value} if isinstance(value, dict) else value
    return AppConfig.model_validate(args)


def start(app_config: AppConfig, hosted: bool = True,
          providers: dict[str, Any] | None = None) -> InProcess:
    """`providers` replaces the scripted hosted ones (e.g. the real adapters on the wire fakes)."""
    engine = FakeEngine()
    openai, anthropic = ScriptedProvider("openai"), ScriptedProvider("anthropic")
    hosted_providers = providers or {"openai": openai, "anthropic": anthropic}
    providers = {"local": EngineProvider({LOCAL: engine})}
    if hosted:
        providers |= hosted_providers
    embedder = Embedder(app_config.embedder, openai_config=app_config.router.providers.openai,
                        encoder_factory=fake_encoder, batched=False,
                        breaker=app_config.router.breaker, tracing=app_config.tracing)
    services = build_services(app_config, providers, DirectEmbedder(embedder),
                              {"smollm2-135m": _ready, "embedder": _ready})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(services)),
                               base_url="http://in-process", headers={"X-API-Key": KEY},
                               timeout=30)
    return InProcess(client, services, engine, openai, anthropic, embedder)


async def _ready() -> None:
    return None


# The usage details of an answer that read, wrote and reasoned nothing (OpenAI sends them all).
NO_CACHE = {"prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}
