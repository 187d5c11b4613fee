"""The whole graph under real Serve with the fake engine and encoder injected through the builder's
factories (as Ray Serve LLM runs its mock engine): the Serve hops, handles and streaming are real,
the model is instant and deterministic."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.graph import fake_graph
from tests.fakes.inprocess import BASE
from tests.fakes.scripted import fake_engine


@pytest.fixture(scope="module")
def fake_url(serve_root: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_graph(tmp_path_factory.mktemp("fake-graph"), "fake", BASE["local_models"][0],
                    fake_engine) as prefix:
        yield f"{serve_root}{prefix}"


def test_the_fake_engine_streams_through_every_hop(fake_url: str) -> None:
    with httpx.stream("POST", f"{fake_url}/v1/chat/completions", timeout=60, json={
            "model": "smollm2-135m", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in map(json.loads, lines) if c["choices"])
    assert text == "The fake engine explains it well."


def test_the_fake_encoder_serves_embeddings_through_serve_batch(fake_url: str) -> None:
    response = httpx.post(f"{fake_url}/api/v1/ai/embeddings", timeout=60,
                          json={"texts": ["one", "two", "one"]})
    body = response.json()
    assert response.status_code == 200, body
    assert body["deduplicated"] == 1 and len(body["embeddings"]) == 3
    assert httpx.get(f"{fake_url}/ready", timeout=30).json()["status"] == "ready"
