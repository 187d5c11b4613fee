"""Embeddings in process: both wire formats, input order, cache and deduplication, and the limits,
through the Embedder on the fake encoder."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest_asyncio

from tests.fakes import Fault
from tests.fakes.inprocess import ADMIN_KEY, DirectEmbedder, InProcess, config, start


async def test_openai_format_keeps_input_order_in_float_and_base64(api: InProcess) -> None:
    texts = ["cells", "atoms", "stars"]
    floats = (await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2",
                                                "input": texts})).json()
    packed = (await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts,
                                                "encoding_format": "base64"})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1, 2]
    for as_float, as_base64 in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(as_base64["embedding"]), "<f4")
        assert np.allclose(decoded, as_float["embedding"])
    assert floats["model"] == "all-minilm-l6-v2"


async def test_the_seed_format_reports_cache_hits_and_duplicates(api: InProcess) -> None:
    body = {"texts": ["a cell", "a  cell", "an atom"]}
    first = (await api.post("/api/v1/ai/embeddings", body)).json()
    again = (await api.post("/api/v1/ai/embeddings", body)).json()
    assert (first["deduplicated"], first["cache_hits"]) == (1, 0)
    assert (again["deduplicated"], again["cache_hits"]) == (1, 2)
    assert first["embeddings"][0] == first["embeddings"][1] == again["embeddings"][0]
    assert first["dims"] == 384 and first["count"] == 3


def embedder_calls(api: InProcess) -> int:
    client = api.services.embeddings._embedder
    assert isinstance(client, DirectEmbedder)
    return client.calls


async def test_a_fully_cached_request_is_answered_before_the_hop_to_the_embedder(
        api: InProcess) -> None:
    async def hits(texts: list[str], **extra: object) -> int:
        response = await api.post("/api/v1/ai/embeddings", {"texts": texts, **extra})
        assert response.status_code == 200, response.text
        return int(response.json()["cache_hits"])

    assert (await hits(["a cell", "an atom"]), embedder_calls(api)) == (0, 1)
    assert (await hits(["an  atom", "a cell", "a cell"]), embedder_calls(api)) == (2, 1)
    assert (await hits(["a cell", "a star"]), embedder_calls(api)) == (1, 2)  # one is new
    assert (await hits(["a cell"], use_cache=False), embedder_calls(api)) == (0, 3)


async def test_without_a_router_cache_every_request_crosses_the_hop(tmp_path) -> None:
    api = start(config(tmp_path, embedder={"cache": {"router_lookup": False}}))
    try:
        for _ in range(2):
            assert (await api.post("/api/v1/ai/embeddings", {"texts": ["x"]})).status_code == 200
        assert embedder_calls(api) == 2
        assert api.embedder.inflight() == 0
    finally:
        await api.close()


async def test_other_dimensions_for_the_local_model_is_a_400(api: InProcess) -> None:
    response = await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x",
                                                 "dimensions": 128})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"


async def test_too_many_texts_is_a_422(api: InProcess) -> None:
    response = await api.post("/api/v1/ai/embeddings", {"texts": ["x"] * 3000})
    assert response.status_code == 422


async def test_an_unknown_model_is_a_404_that_says_how_to_add_it(api: InProcess) -> None:
    response = await api.post("/v1/embeddings", {"model": "word2vec", "input": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "catalog.models" in error["message"]


@pytest_asyncio.fixture(loop_scope="function")
async def with_openai(tmp_path, fake_openai) -> AsyncIterator[InProcess]:
    """The API with the Embedder's OpenAI client on the wire fake; a bad key opens its breaker."""
    running = start(config(tmp_path, router={
        "providers": {"openai": {"base_url": f"{fake_openai.url}/v1"}}}))
    yield running
    await running.close()


SMALL = "text-embedding-3-small"


async def embed(api: InProcess, texts: list[str]) -> httpx.Response:
    return await api.post("/api/v1/ai/embeddings", {"texts": texts, "model": SMALL})


async def embedder_breaker(api: InProcess) -> dict | None:
    health = (await api.client.get("/health/providers")).json()
    return health["embedder_breakers"].get(f"openai/{SMALL}")


async def test_a_fully_cached_openai_request_does_not_touch_the_breaker(
        with_openai: InProcess, fake_openai) -> None:
    assert (await embed(with_openai, ["cells", "atoms"])).status_code == 200
    fake_openai.enqueue(Fault(status=401))  # a revoked key opens the breaker at once
    assert (await embed(with_openai, ["stars"])).status_code == 502
    assert (await embedder_breaker(with_openai))["state"] == "open"
    called = len(fake_openai.requests)
    cached = await embed(with_openai, ["cells", "atoms"])
    assert cached.status_code == 200, cached.text
    assert cached.json()["cache_hits"] == 2
    assert len(fake_openai.requests) == called
    assert (await embedder_breaker(with_openai))["state"] == "open"  # nothing proved it healthy


async def test_the_embedders_breakers_are_visible_and_reset_with_the_routers(
        with_openai: InProcess, fake_openai) -> None:
    fake_openai.enqueue(Fault(status=401))
    await embed(with_openai, ["cells"])
    assert (await embedder_breaker(with_openai))["state"] == "open"
    reset = await with_openai.client.post("/health/providers/reset",
                                          headers={"X-API-Key": ADMIN_KEY})
    assert reset.json() == {"status": "reset", "embedder": "reset"}
    assert await embedder_breaker(with_openai) is None  # closed and forgotten
    assert (await embed(with_openai, ["cells"])).status_code == 200


async def test_openai_embeddings_are_priced_from_the_configured_catalogue(
        tmp_path, fake_openai) -> None:
    repriced = {"name": SMALL, "provider": "openai", "tier": "small", "kind": "embedding",
                "context_window": 8191, "input_per_million": 1000.0, "output_per_million": 0.0}
    running = start(config(tmp_path, catalog={"models": [repriced]}, router={
        "providers": {"openai": {"base_url": f"{fake_openai.url}/v1"}}}))
    try:
        response = await running.post("/api/v1/ai/embeddings", {"texts": ["two words"],
                                                                 "model": SMALL,
                                                                 "user_id": "priced"})
        assert response.status_code == 200, response.text
        (record,) = await running.records("priced")
        assert record["cost_usd"] == 0.002  # 2 tokens at the operator's $1000 per million
    finally:
        await running.close()
