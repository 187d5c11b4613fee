"""Vector caches: keys, the bounded LRU, and Redis (real, on loopback) including its outage."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import redis

from deployments.embed.cache import MemoryCache, RedisCache, cache_key
from deployments.embed.shared import item_slots

V = np.arange(4, dtype=np.float32)


def test_key_depends_on_model_dims_and_text() -> None:
    assert cache_key("m", 384, "a b") != cache_key("m", 256, "a b")
    assert cache_key("m", 384, "a b") != cache_key("n", 384, "a b")
    assert cache_key("m", 384, "a b") != cache_key("m", 384, "a c")


def test_only_the_local_model_folds_whitespace_and_nfc() -> None:
    """MiniLM's WordPiece tokenizer splits on whitespace and decomposes (NFD) before it looks up
    tokens, so folded texts give it the same tokens; OpenAI's BPE encodes whitespace runs and
    composed characters as they are, so for its models "a  b" is another text."""
    local = "all-minilm-l6-v2"
    assert cache_key(local, 384, "a  b ") == cache_key(local, 384, "a b")
    assert cache_key(local, 384, "cafe\u0301") == cache_key(local, 384, "caf\u00e9")
    for openai_model in ("text-embedding-3-small", "text-embedding-ada-002"):
        assert cache_key(openai_model, 0, "a  b") != cache_key(openai_model, 0, "a b")
        assert cache_key(openai_model, 0, "cafe\u0301") != cache_key(openai_model, 0, "caf\u00e9")


def test_slots_deduplicate_and_keep_positions() -> None:
    slot_of, keys, texts = item_slots(["k1", "k2", "k1"], ["x", "y", "x"], deduplicate=True)
    assert (slot_of, keys, texts) == ([0, 1, 0], ["k1", "k2"], ["x", "y"])
    assert item_slots(["k1", "k1"], ["x", "x"], deduplicate=False)[0] == [0, 1]


async def test_memory_cache_is_a_bounded_lru() -> None:
    cache = MemoryCache(max_items=2)
    await cache.set_many({"a": V, "b": V})
    await cache.get_many(["a"])  # a is now the most recent
    await cache.set_many({"c": V})
    assert [v is not None for v in await cache.get_many(["a", "b", "c"])] == [True, False, True]
    assert len(cache) == 2


@pytest.fixture
def shared_redis():
    """The machine's Redis on 6379; only keys under this test's own prefix are touched."""
    prefix = f"learnx-test-{uuid.uuid4().hex}:"
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield prefix, client
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_redis_round_trip_stores_compact_float32_with_ttl(shared_redis) -> None:
    prefix, client = shared_redis
    cache = RedisCache("redis://127.0.0.1:6379/0", prefix, ttl_s=60, timeout_s=1)
    await cache.set_many({"k": V})
    (got,) = await cache.get_many(["k"])
    assert np.array_equal(got, V)
    assert client.get(f"{prefix}k") == V.tobytes()  # 16 bytes, not JSON
    assert 0 < client.ttl(f"{prefix}k") <= 60
    await cache.aclose()


@pytest.mark.parametrize("stored", [b"12345", b"", np.arange(3, dtype=np.float32).tobytes()])
async def test_a_corrupt_or_wrongly_sized_value_is_a_miss(shared_redis, stored: bytes) -> None:
    prefix, client = shared_redis
    cache = RedisCache("redis://127.0.0.1:6379/0", prefix, ttl_s=60, timeout_s=1)
    key = cache_key("all-minilm-l6-v2", 4, "hello")
    client.set(f"{prefix}{key}", stored)
    assert [found is None for found in await cache.get_many([key])] == [True]
    client.set(f"{prefix}{key}", V.tobytes())
    (found,) = await cache.get_many([key])
    assert np.array_equal(found, V)
    await cache.aclose()


async def test_redis_down_is_a_miss_and_opens_a_breaker(own_redis) -> None:
    own_redis.stop()
    try:
        cache = RedisCache(own_redis.url, "x:", ttl_s=60, timeout_s=0.05)
        for _ in range(3):
            assert await cache.get_many(["k"]) == [None]
        assert cache.errors == 3
        assert cache.breaker.state == "open"
        assert await cache.get_many(["k"]) == [None]  # no attempt while open
        assert cache.errors == 3
        await cache.aclose()
    finally:
        own_redis.start()


async def test_a_cancelled_lookup_gives_the_half_open_breaker_its_probe_back() -> None:
    writers: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, w: writers.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]  # a "Redis" that accepts and never answers
    now = [1000.0]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", "x:", ttl_s=60, timeout_s=5,
                       clock=lambda: now[0])
    try:
        for _ in range(3):
            cache.breaker.record_failure()
        now[0] += 2  # half-open
        lookup = asyncio.ensure_future(cache.get_many(["k"]))
        await asyncio.sleep(0.1)
        assert not cache.breaker.available()  # the lookup holds the probe
        lookup.cancel()  # its caller left
        with pytest.raises(asyncio.CancelledError):
            await lookup
        assert cache.breaker.available()
    finally:
        for writer in writers:
            writer.close()
        silent.close()
        await cache.aclose()
