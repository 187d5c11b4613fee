"""Embedder: one deployment for every embedding model. Per item: cache lookup, deduplication within
a request and across concurrent requests (single flight), then the model: the local encoder through
@serve.batch (many callers, one llama.cpp call), or OpenAI's embeddings API."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import openai
from ray import serve

from core import metrics
from core.breakers import Breakers, BreakerSettings, counts
from core.config import BreakerConfig, EmbedderConfig, HostedProviderConfig
from core.errors import ModelUnavailable, ProviderError
from core.pricing import estimate_tokens
from core.sdk import openai_client, translate_openai_error
from core.tracing import INPUT_TOKENS, OPERATION, REQUEST_MODEL, running, start_tracing
from core.tracing_config import TracingConfig
from deployments.embed.cache import RedisCache, cache_key
from deployments.embed.encoder import Encoder, LlamaCppEncoder, embed_batch
from deployments.embed.shared import (
    EmbedRequest,
    EmbedResult,
    cache_dims,
    item_slots,
    make_cache,
)

OPENAI_CHUNK = 2048  # inputs per OpenAI embeddings call
HEALTH_TIMEOUT_S = 4.0  # within /ready's 5 s per check


EncoderFactory = Callable[[EmbedderConfig, str | None], Encoder]


def default_encoder(config: EmbedderConfig, models_path: str | None) -> Encoder:
    from models import find_embedding_model, resolve_embedding_gguf

    spec = find_embedding_model(config.model)
    return LlamaCppEncoder(spec, resolve_embedding_gguf(spec, models_path), config.n_threads)


class Embedder:
    def __init__(self, config: EmbedderConfig, models_path: str | None = None,
                 openai_config: HostedProviderConfig | None = None,
                 encoder_factory: EncoderFactory = default_encoder, batched: bool = True,
                 breaker: BreakerConfig | None = None, tracing: TracingConfig | None = None):
        """`batched`: batch local calls with @serve.batch (which needs a Serve replica); in-process
        tests turn it off. `breaker`: the OpenAI embeddings breakers' settings (the router's)."""
        self._config = config
        self.tracing = start_tracing(tracing, "embedder") if tracing is not None else None
        self._encoder = encoder_factory(config, models_path)
        self._cache = make_cache(config)
        # No fallback between embedding models (vectors of different models must never mix), so
        # the SDK's own retries (backoff, Retry-After) are the only ones here.
        self._openai = openai_client(openai_config or HostedProviderConfig(), os.environ,
                                     max_retries=2)
        self._health = Breakers(BreakerSettings(**(breaker or BreakerConfig()).model_dump()))
        self._inflight: dict[str, asyncio.Task[np.ndarray]] = {}
        self._compute = self._embed_local if batched else self._embed_one
        self._closed = False

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batched: Any = self._embed_local  # @serve.batch adds the setters; its stubs do not say so
        batched.set_max_batch_size(int(user_config["max_batch_size"]))
        batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _embed_local(self, texts: list[str]) -> list[np.ndarray]:
        metrics.record_batch_size(len(texts))
        return await asyncio.to_thread(embed_batch, self._encoder, texts, self._config.chunk_size)

    async def _embed_one(self, text: str) -> np.ndarray:
        return (await asyncio.to_thread(embed_batch, self._encoder, [text], 1))[0]

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """The request's span (when the router's is traced) around `_embed`."""
        span = None
        if self.tracing is not None:
            span = self.tracing.child(request.trace, f"embeddings {request.model}", {
                OPERATION: "embeddings", REQUEST_MODEL: request.model,
                "learnx.embed.texts": len(request.texts)})
        if span is None:
            return await self._embed(request)
        with running(span):
            result = await self._embed(request)
            span.set_attributes({INPUT_TOKENS: result.prompt_tokens,
                                 "learnx.embed.cache_hits": result.cache_hits,
                                 "learnx.embed.deduplicated": result.deduplicated})
            return result

    async def _embed(self, request: EmbedRequest) -> EmbedResult:
        """Every input item is exactly one of: a cache hit, a duplicate of an earlier item of the
        request, or computed; `cache_hits + deduplicated + computed == len(texts)`."""
        local = request.model == self._encoder.model
        dims = cache_dims(request, self._encoder.dims if local else None)
        keys = [cache_key(request.model, dims, text) for text in request.texts]
        slot_of, slots, slot_texts = item_slots(keys, request.texts, request.deduplicate)
        vectors = await self._lookup(slots, request.use_cache)
        missing = [i for i, v in enumerate(vectors) if v is None]
        if self._cache is not None and request.use_cache:
            metrics.record_embedding_cache(request.model, len(slots) - len(missing), len(missing))
        texts = [slot_texts[i] for i in missing]
        if local:
            fresh, tokens = await self._local([slots[i] for i in missing], texts)
        else:
            fresh, tokens = await self._openai_embed(request.model, texts, request.dimensions)
        found = {i: v for i, v in enumerate(vectors) if v is not None}
        found |= dict(zip(missing, fresh, strict=True))
        if self._cache is not None and request.use_cache and missing:
            await self._cache.set_many({slots[i]: found[i] for i in missing})
        ordered = [found[s] for s in slot_of]
        return EmbedResult(ordered, request.model, len(ordered[0]) if ordered else dims,
                           cache_hits=len(slots) - len(missing),
                           deduplicated=len(keys) - len(slots), prompt_tokens=tokens)

    async def _lookup(self, keys: list[str], use_cache: bool) -> list[np.ndarray | None]:
        if self._cache is None or not use_cache:
            return [None] * len(keys)
        return await self._cache.get_many(keys)

    async def _local(self, keys: list[str], texts: list[str]) -> tuple[list[np.ndarray], int]:
        tasks = []
        for key, text in zip(keys, texts, strict=True):
            if key not in self._inflight:  # single flight across concurrent requests
                task = asyncio.ensure_future(self._compute(text))
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._landed, key))
            tasks.append(asyncio.shield(self._inflight[key]))  # a cancelled caller can't cancel it
        return list(await asyncio.gather(*tasks)), sum(estimate_tokens(t) for t in texts)

    def _landed(self, key: str, _: object) -> None:
        self._inflight.pop(key, None)

    async def _openai_embed(self, model: str, texts: list[str],
                            dimensions: int | None) -> tuple[list[np.ndarray], int]:
        """OpenAI's embeddings API behind a circuit breaker; errors translated as for chat. With
        nothing to compute (every item cached) neither the API nor its breaker is touched."""
        if not texts:
            return [], 0
        if self._openai is None:
            raise ModelUnavailable(f"{model} needs OPENAI_API_KEY")
        breaker = self._health.breaker("openai", model)
        if not breaker.allow():
            raise ProviderError("circuit open", provider="openai", model=model)
        try:
            found = await self._openai_calls(self._openai, model, texts, dimensions)
        except (openai.APIError, ValueError) as error:
            translated = translate_openai_error(model, error)
            breaker.record_failure(counts(translated))
            raise translated from None
        except BaseException:
            breaker.release()  # cancelled (or a bug): no verdict on the provider
            raise
        breaker.record_success()
        return found

    @staticmethod
    async def _openai_calls(client: openai.AsyncOpenAI, model: str, texts: list[str],
                            dimensions: int | None) -> tuple[list[np.ndarray], int]:
        vectors: list[np.ndarray] = []
        tokens = 0
        for start in range(0, len(texts), OPENAI_CHUNK):
            chunk = texts[start:start + OPENAI_CHUNK]
            kwargs: dict[str, Any] = {"model": model, "input": chunk}
            if dimensions:
                kwargs["dimensions"] = dimensions
            response = await client.embeddings.create(**kwargs)
            vectors += [np.asarray(d.embedding, dtype=np.float32) for d in response.data]
            # A gateway may leave usage out: estimate it rather than fail a good answer.
            tokens += (response.usage.prompt_tokens if response.usage is not None
                       else sum(estimate_tokens(t) for t in chunk))
        return vectors, tokens

    async def breakers(self) -> dict[str, dict[str, object]]:
        """This replica's breakers: OpenAI embeddings per model, and the Redis cache's."""
        found = self._health.snapshot()
        if isinstance(self._cache, RedisCache):
            found["redis/vector-cache"] = self._cache.breaker.snapshot()
        return found

    async def reset_breakers(self) -> None:
        """Close this replica's breakers (operators, after fixing OpenAI's key or Redis)."""
        self._health.reset()
        if isinstance(self._cache, RedisCache):
            self._cache.breaker.reset()

    def inflight(self) -> int:
        """Texts being embedded now (shared by concurrent requests)."""
        return len(self._inflight)

    async def aclose(self) -> None:
        """Release connections (OpenAI's, Redis's)."""
        self._closed = True
        if self.tracing is not None:
            self.tracing.shutdown()
        if self._openai is not None:
            await self._openai.close()
        if self._cache is not None:
            await self._cache.aclose()

    async def check_health(self) -> None:
        """The encoder answers a tiny text with a finite vector of its dimensions, in time (through
        the same path as requests, so the model is never called from two threads at once)."""
        if self._closed:
            raise RuntimeError("the embedder is closed")
        try:
            vector = await asyncio.wait_for(self._compute("ok"), HEALTH_TIMEOUT_S)
        except Exception as error:
            raise RuntimeError(f"the encoder failed ({type(error).__name__})") from None
        if vector.shape != (self._encoder.dims,) or not np.isfinite(vector).all():
            raise RuntimeError(f"the encoder answered a vector of shape {vector.shape}, not "
                               f"({self._encoder.dims},) finite values")
