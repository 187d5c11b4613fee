"""Embeddings through the real graph: local model vs reference, order, dedup, cache, batching,
cancellation, Redis outage, OpenAI backend, limits."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from ray import serve

from core.errors import ProviderError
from tests.conftest import APP_NAME, AUTH
from tests.fakes import Fault
from tests.metrics import total

LOCAL = "all-minilm-l6-v2"
REFERENCE = json.loads((Path(__file__).resolve().parents[2] / "data" /
                        "minilm_reference.json").read_text())["items"]


def seed(url: str, texts: list[str], **extra) -> dict:
    response = httpx.post(f"{url}/api/v1/ai/embeddings", json={"texts": texts, **extra},
                          timeout=60, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def unique(label: str, n: int) -> list[str]:
    stamp = time.time_ns()
    return [f"{label} {stamp} item {i}" for i in range(n)]


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_openai_sdk_gets_reference_quality_vectors(openai_client, encoding: str) -> None:
    texts = [item["text"] for item in REFERENCE]
    response = openai_client.embeddings.create(model=LOCAL, input=texts, encoding_format=encoding)
    assert response.model == LOCAL
    if encoding == "base64":  # the SDK hands base64 back as the string it received
        vectors = [np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in response.data]
    else:
        vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == list(range(len(texts)))
    for item, vector in zip(REFERENCE, vectors, strict=True):
        assert cosine(vector, item["embedding"]) >= 0.999, item["text"]


def test_order_is_kept_with_duplicates_and_mixed_cache_hits(serve_url) -> None:
    a, b, c, d = unique("order", 4)
    seed(serve_url, [a, b])
    result = seed(serve_url, [c, a, c, b, d])
    assert (result["count"], result["cache_hits"], result["deduplicated"]) == (5, 2, 1)
    alone = {t: seed(serve_url, [t], use_cache=False)["embeddings"][0] for t in (a, b, c, d)}
    for text, vector in zip([c, a, c, b, d], result["embeddings"], strict=True):
        assert cosine(vector, alone[text]) > 0.9999


def test_seed_response_shape(serve_url) -> None:
    result = seed(serve_url, unique("shape", 2), user_id="u1")
    assert result["model"] == LOCAL and result["dims"] == 384
    assert result["processing_time"] >= 0
    assert len(result["embeddings"]) == 2 and len(result["embeddings"][0]) == 384


def test_use_cache_false_neither_reads_nor_counts_hits(serve_url) -> None:
    texts = unique("nocache", 2)
    seed(serve_url, texts)
    assert seed(serve_url, texts, use_cache=False)["cache_hits"] == 0
    assert seed(serve_url, texts)["cache_hits"] == 2


async def test_concurrent_callers_share_model_calls(serve_url) -> None:
    def batches() -> tuple[float, float]:
        """(batches, batches of one text) the Embedder reported so far."""
        return (total("ray_learnx_embedding_batch_size_count"),
                total("ray_learnx_embedding_batch_size_bucket", le="1.0"))

    before = batches()
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
        await asyncio.gather(*(client.post(f"{serve_url}/api/v1/ai/embeddings",
                                           json={"texts": [t], "use_cache": False})
                               for t in unique("batch", 32)))
    deadline = time.monotonic() + 30
    while batches()[0] == before[0]:  # reported every 500 ms
        assert time.monotonic() < deadline, "no batch was reported"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # the last batches' report
    after = batches()
    calls, single = after[0] - before[0], after[1] - before[1]
    assert calls < 32 and calls > single, f"no batching happened: {calls} calls, {single} of one"


async def test_a_cancelled_caller_does_not_stall_the_others(serve_url) -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
        doomed = asyncio.create_task(client.post(
            f"{serve_url}/api/v1/ai/embeddings",
            json={"texts": unique("doomed", 200), "use_cache": False}))
        await asyncio.sleep(0.2)
        doomed.cancel()
        start = time.monotonic()
        others = await asyncio.gather(*(client.post(f"{serve_url}/api/v1/ai/embeddings",
                                                    json={"texts": [t], "use_cache": False})
                                        for t in unique("survivor", 8)))
        assert all(r.status_code == 200 for r in others)
        assert time.monotonic() - start < 30
        # Shared work of the cancelled request is finished, not left hanging.
        embedder = serve.get_deployment_handle("Embedder", app_name=APP_NAME)
        deadline = time.monotonic() + 30
        while await embedder.inflight.remote():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


def test_redis_outage_degrades_to_the_model_and_recovers(serve_url, own_redis) -> None:
    texts = unique("redis", 3)
    assert seed(serve_url, texts)["cache_hits"] == 0
    assert seed(serve_url, texts)["cache_hits"] == 3  # served from Redis
    own_redis.stop()
    try:
        for _ in range(4):
            result = seed(serve_url, texts)  # still answers, from the model
            assert result["cache_hits"] == 0
    finally:
        own_redis.start()  # an empty Redis: the old entries are gone
    deadline = time.monotonic() + 30
    while seed(serve_url, texts)["cache_hits"] != 3:  # breaker half-opens, cache refills
        assert time.monotonic() < deadline, "the cache did not resume"
        time.sleep(0.5)


def test_openai_embeddings_go_to_openai_and_name_their_model(serve_url, fake_openai) -> None:
    response = httpx.post(f"{serve_url}/v1/embeddings", timeout=60, json={
        "model": "text-embedding-3-small", "input": ["a b c", "d e"], "dimensions": 8}, headers=AUTH)
    body = response.json()
    assert response.status_code == 200, body
    assert body["model"] == "text-embedding-3-small"
    assert [len(d["embedding"]) for d in body["data"]] == [8, 8]
    assert body["usage"]["prompt_tokens"] == 5
    (sent,) = fake_openai.requests
    assert sent.body["input"] == ["a b c", "d e"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": LOCAL, "input": []}, 400, "input"),
    ({"model": LOCAL, "input": [[1, 2, 3]]}, 400, "input"),
    ({"model": LOCAL, "input": ["x"] * 300}, 422, "the limit is 256"),
    ({"model": LOCAL, "input": ["x" * 40_000]}, 422, "longer than"),
    ({"model": "nope", "input": ["x"]}, 404, "does not exist"),
    ({"model": LOCAL, "input": ["x"], "dimensions": 128}, 400, "384 dimensions"),
    ({"model": LOCAL, "input": ["x"], "encoding_format": "hex"}, 400, "encoding_format"),
])
def test_bad_embedding_requests_get_a_clear_4xx(serve_url, body, status, says) -> None:
    response = httpx.post(f"{serve_url}/v1/embeddings", json=body, timeout=60, headers=AUTH)
    assert response.status_code == status
    assert says in response.json()["error"]["message"]


@pytest.mark.parametrize(("fault", "status"), [(Fault(status=400), 400), (Fault(status=401), 502)])
def test_openai_embedding_failures_are_typed(serve_url, fake_openai, fault, status) -> None:
    fake_openai.enqueue(*[fault] * 3)  # the SDK's own retries included
    response = httpx.post(f"{serve_url}/v1/embeddings", timeout=60,
                          json={"model": "text-embedding-3-small", "input": ["x"]}, headers=AUTH)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_router_errors_cross_processes_typed() -> None:
    import pickle

    error = ProviderError("HTTP 503", provider="openai", model="m", upstream_status=503,
                          retry_after=2.0)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ProviderError
    assert (again.message, again.upstream_status, again.retry_after) == (
        error.message, 503, 2.0)
