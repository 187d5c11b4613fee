"""What the router and the Embedder share, so the router imports no Serve deployment: the request and
result of an embedding call, the configured cache, and the cache path both take (an answer wholly
from the cache, remembering one, the slots of deduplicated items)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.config import EmbedderConfig
from deployments.embed.cache import MemoryCache, RedisCache, VectorCache, cache_key


@dataclass(frozen=True)
class EmbedRequest:
    texts: list[str]
    model: str  # concrete: the local model's name or an OpenAI embedding model
    use_cache: bool = True
    deduplicate: bool = True
    dimensions: int | None = None
    # The W3C trace context of the router's request (core/tracing.py), for the Embedder's span.
    trace: dict[str, str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[np.ndarray]  # in input order
    model: str
    dims: int
    cache_hits: int  # input items answered from the cache
    deduplicated: int  # input items answered by an identical item of the same request
    prompt_tokens: int


def make_cache(config: EmbedderConfig, max_items: int | None = None) -> VectorCache | None:
    """The configured cache; a memory cache holds `max_items` (default: the configured bound)."""
    cache = config.cache
    if not cache.enabled:
        return None
    if cache.type == "redis":
        return RedisCache(cache.redis_url, cache.key_prefix, cache.ttl_s, cache.redis_timeout_s)
    return MemoryCache(max_items or cache.max_items)


def cache_dims(request: EmbedRequest, local_dims: int | None) -> int:
    """The dimensions in an item's cache key: the local model's, or what was asked of OpenAI."""
    return local_dims if local_dims is not None else (request.dimensions or 0)


async def from_cache(cache: VectorCache, request: EmbedRequest, dims: int) -> EmbedResult | None:
    """The whole answer when every item is cached (as the Embedder would give it), else None."""
    keys = [cache_key(request.model, dims, text) for text in request.texts]
    slot_of, slots, _ = item_slots(keys, request.texts, request.deduplicate)
    vectors = await cache.get_many(slots)
    found = [v for v in vectors if v is not None]
    if not slots or len(found) < len(slots):
        return None
    ordered = [found[s] for s in slot_of]
    return EmbedResult(ordered, request.model, len(ordered[0]), cache_hits=len(slots),
                       deduplicated=len(keys) - len(slots), prompt_tokens=0)


async def remember(cache: VectorCache, request: EmbedRequest, result: EmbedResult,
                   dims: int) -> None:
    await cache.set_many({cache_key(request.model, dims, text): vector
                          for text, vector in zip(request.texts, result.vectors, strict=True)})


def item_slots(keys: list[str], texts: list[str],
           deduplicate: bool) -> tuple[list[int], list[str], list[str]]:
    """(slot of each input item, cache key of each slot, text of each slot)."""
    if not deduplicate:
        return list(range(len(keys))), list(keys), list(texts)
    index: dict[str, int] = {}
    slot_of: list[int] = []
    slot_texts: list[str] = []
    for key, text in zip(keys, texts, strict=True):
        if key not in index:
            index[key] = len(index)
            slot_texts.append(text)
        slot_of.append(index[key])
    return slot_of, list(index), slot_texts
