"""Embeddings: which model, input limits, and the wire formats; the work is the Embedder's."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from ray.serve.handle import DeploymentHandle

from core import metrics, tracing
from core.config import EmbedderConfig
from core.errors import (
    InvalidRequest,
    LimitExceeded,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    ServiceError,
)
from core.pricing import estimate, estimate_tokens
from deployments.embed.cache import MemoryCache, RedisCache, VectorCache
from deployments.embed.shared import (
    EmbedRequest,
    EmbedResult,
    cache_dims,
    from_cache,
    make_cache,
    remember,
)
from models import find_embedding_model
from models.catalog import HOSTED_MODELS, ModelCard
from router.run import spans
from router.run.policy import ADD_A_MODEL
from router.usage.meter import Meter


class EmbedderClient(Protocol):
    """The Embedder as the router calls it: through a Serve handle, or in process in tests."""

    async def embed(self, request: EmbedRequest) -> EmbedResult: ...

    async def breakers(self) -> dict[str, dict[str, object]]: ...

    async def reset_breakers(self) -> None: ...


class HandleEmbedder:
    """The Embedder deployment behind a Serve handle."""

    def __init__(self, handle: DeploymentHandle[Any]):
        self._handle = handle

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        result: EmbedResult = await self._handle.embed.remote(request)
        return result

    async def breakers(self) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = await self._handle.breakers.remote()
        return found

    async def reset_breakers(self) -> None:
        await self._handle.reset_breakers.remote()


def openai_cards(catalog: Sequence[ModelCard]) -> dict[str, ModelCard]:
    """The catalogue's OpenAI embedding models (built-in or the operator's), by name."""
    return {c.name: c for c in catalog if c.kind == "embedding" and c.provider == "openai"}


def front_cache(config: EmbedderConfig) -> VectorCache | None:
    """What the router reads before the Serve hop to the Embedder: the shared Redis cache itself,
    or its own LRU of the vectors it served (the Embedder's memory cache is in another process)."""
    cache = config.cache
    return make_cache(config, cache.router_max_items) if cache.router_lookup else None


class EmbeddingService:
    def __init__(self, config: EmbedderConfig, embedder: EmbedderClient | None, openai: bool,
                 cache: VectorCache | None = None, catalog: Sequence[ModelCard] = HOSTED_MODELS):
        self._config = config
        self._openai_cards = openai_cards(catalog)
        self._embedder = embedder
        self._openai = openai
        self._cache = cache
        spec = find_embedding_model(config.model)
        self._local_dims = spec.dims
        self._local = {n: spec.name for n in (spec.name, *spec.aliases)} if embedder else {}
        self._local_card = ModelCard(name=spec.name, provider="local", tier="small", kind="embedding",
                                     context_window=spec.max_seq_tokens, input_per_million=0.0,
                                     output_per_million=0.0)

    async def breakers(self) -> dict[str, dict[str, object]]:
        """The Embedder's breakers (of the replica that answers)."""
        return await self._embedder.breakers() if self._embedder is not None else {}

    async def reset_breakers(self) -> None:
        if self._embedder is not None:
            await self._embedder.reset_breakers()
        if isinstance(self._cache, RedisCache):
            self._cache.breaker.reset()

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()

    def models(self) -> list[tuple[str, str]]:
        local = [(m, "local") for m in sorted(set(self._local.values()))]
        return local + [(m, "openai") for m in sorted(self._openai_cards) if self._openai]

    def resolve(self, model: str | None) -> str:
        if model is None:
            return next(iter(self._local.values()), "text-embedding-3-small")
        if model in self._local:
            return self._local[model]
        if model in self._openai_cards:
            if self._openai:
                return model
            raise ModelUnavailable(f"{model} needs OPENAI_API_KEY")
        raise ModelNotFound(model, [*sorted(self._local), *sorted(self._openai_cards)],
                            how=ADD_A_MODEL)

    async def embed(self, texts: list[str], model: str | None, meter: Meter, use_cache: bool = True,
                    deduplicate: bool = True, dimensions: int | None = None) -> EmbedResult:
        concrete = self.resolve(model)
        spans.requested(model or concrete)
        self._check(texts)
        if self._embedder is None:
            raise ModelUnavailable("the embedding service is disabled in this deployment")
        if concrete in self._local.values() and dimensions not in (None, 384):
            raise InvalidRequest(f"{concrete} has 384 dimensions; omit dimensions",
                                 param="dimensions")
        card = self._openai_cards.get(concrete, self._local_card)
        tokens = sum(estimate_tokens(t) for t in texts)
        await meter.admission.reserve_tokens(tokens)
        allowance = await meter.admission.allowance(estimate(card, tokens, 0),
                                                    "use the local embedding model")
        try:
            result = await self._call(texts, concrete, use_cache, deduplicate, dimensions)
        except BaseException:
            meter.embedded(card, 0, 0, allowance)  # settles the hold to nothing
            raise
        meter.embedded(card, result.prompt_tokens, result.cache_hits, allowance)
        return result

    async def _call(self, texts: list[str], concrete: str, use_cache: bool, deduplicate: bool,
                    dimensions: int | None) -> EmbedResult:
        request = EmbedRequest(texts, concrete, use_cache, deduplicate, dimensions,
                               trace=tracing.current_carrier())
        if self._cache is None or not use_cache:
            return await self._remote(request)
        dims = cache_dims(request, self._local_dims if concrete in self._local.values() else None)
        cached = await from_cache(self._cache, request, dims)
        if cached is not None:
            metrics.record_embedding_cache(concrete, cached.cache_hits, 0)
            return cached
        result = await self._remote(request)
        if isinstance(self._cache, MemoryCache):  # Redis: the Embedder has stored them
            await remember(self._cache, request, result, dims)
        return result

    async def _remote(self, request: EmbedRequest) -> EmbedResult:
        if self._embedder is None:
            raise ModelUnavailable("the embedding service is disabled in this deployment")
        concrete = request.model
        try:
            return await self._embedder.embed(request)
        except ServiceError:
            raise  # typed in the Embedder (a rejected request, an OpenAI outage)
        except Exception as error:
            raise ProviderError(f"embedding failed ({type(error).__name__})",
                                provider="local" if concrete in self._local.values() else "openai",
                                model=concrete) from None

    def _check(self, texts: list[str]) -> None:
        if len(texts) > self._config.max_texts:
            raise LimitExceeded(f"{len(texts)} texts in one request; the limit is "
                                 f"{self._config.max_texts}: split the request", param="input")
        too_long = [i for i, t in enumerate(texts) if len(t) > self._config.max_text_chars]
        if too_long:
            raise LimitExceeded(f"text {too_long[0]} is longer than {self._config.max_text_chars} "
                                 "characters: split it into chunks", param="input")


def openai_response(result: EmbedResult, encoding: str) -> dict[str, Any]:
    def encode(vector: np.ndarray) -> Any:
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
        return [float(x) for x in vector]

    return {"object": "list", "model": result.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}


def seed_response(result: EmbedResult, started: float) -> dict[str, Any]:
    return {"embeddings": [[float(x) for x in v] for v in result.vectors], "model": result.model,
            "dims": result.dims, "count": len(result.vectors), "cache_hits": result.cache_hits,
            "deduplicated": result.deduplicated,
            "processing_time": round(time.perf_counter() - started, 6)}
