"""Vector caches, keyed per item by model, dimensions and a hash of the normalized text.

MemoryCache is a bounded LRU. RedisCache stores float32 bytes (MGET / pipelined SET with a TTL);
when Redis is down or slow it answers "miss" within a short timeout, a breaker stops asking for a
while, and embeddings keep coming from the model."""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, cast

import numpy as np

from core.breakers import BreakerSettings, CircuitBreaker
from models import LOCAL_EMBEDDING_MODELS

log = logging.getLogger("ray.serve")


# Models whose tokenizer makes folded texts the same input: the local WordPiece models split on
# whitespace and decompose (NFD) before looking tokens up. OpenAI's BPE encodes whitespace runs and
# composed characters as they are, so its models get the text exactly.
FOLDING_MODELS = frozenset(spec.name for spec in LOCAL_EMBEDDING_MODELS)


def normalize(text: str) -> str:
    """What the cache and dedup consider the same text for a folding model: NFC, whitespace runs
    collapsed, trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(model: str, dims: int, text: str) -> str:
    keyed = normalize(text) if model in FOLDING_MODELS else text
    digest = hashlib.sha256(keyed.encode()).hexdigest()
    return f"{model}:{dims}:{digest}"


def decoded(raw: bytes, key: str) -> np.ndarray | None:
    """A stored vector, or None (a miss) for bytes that are not one of the key's dimensions (a
    truncated write, another writer's value)."""
    parts = key.rsplit(":", 2)
    dims = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
    if not raw or len(raw) % 4 or (dims and len(raw) != dims * 4):
        return None
    return np.frombuffer(raw, dtype=np.float32)


class VectorCache(Protocol):
    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]: ...

    async def set_many(self, items: dict[str, np.ndarray]) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    def __init__(self, max_items: int):
        self._max = max_items
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        found: list[np.ndarray | None] = []
        for key in keys:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
            found.append(vector)
        return found

    async def set_many(self, items: dict[str, np.ndarray]) -> None:
        for key, vector in items.items():
            self._items[key] = vector
            self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    async def aclose(self) -> None:
        self._items.clear()


class RedisCache:
    def __init__(self, url: str, prefix: str, ttl_s: int, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)
        self._prefix = prefix
        self._ttl = ttl_s
        self.breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, cooldown_s=2,
                                                      max_cooldown_s=30), clock)
        self.errors = 0

    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        if not keys or not self.breaker.allow():
            return [None] * len(keys)
        try:
            raw = await self._redis.mget([self._prefix + k for k in keys])
        except Exception as error:  # redis down, slow or refusing: the model still answers
            self._failed(error)
            return [None] * len(keys)
        except BaseException:
            self.breaker.release()  # cancelled: no verdict on Redis
            raise
        self.breaker.record_success()
        return [None if r is None else decoded(cast(bytes, r), key) for r, key in zip(
            raw, keys, strict=True)]

    async def set_many(self, items: dict[str, np.ndarray]) -> None:
        if not items or not self.breaker.allow():
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, vector in items.items():
                    pipe.set(self._prefix + key, np.asarray(vector, np.float32).tobytes(),
                             ex=self._ttl)
                await pipe.execute()
        except Exception as error:
            self._failed(error)
            return
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()

    async def aclose(self) -> None:
        await self._redis.aclose()

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        self.breaker.record_failure()
        log.warning("vector cache unavailable (%s); serving from the model", type(error).__name__)
