"""The Embedder's OpenAI breaker: a half-open probe is released however its call ends, against the
wire fake of OpenAI (in process, without Serve)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from core.config import BreakerConfig, EmbedderConfig, HostedProviderConfig
from core.errors import ProviderError
from deployments.embed.server import Embedder
from deployments.embed.shared import EmbedRequest
from tests.fakes import Fault, Reply
from tests.fakes.scripted import fake_encoder

SMALL = "text-embedding-3-small"


@pytest_asyncio.fixture(loop_scope="function")
async def half_open(fake_openai) -> AsyncIterator[Embedder]:
    """An Embedder whose OpenAI breaker is half-open: the next call is its one probe."""
    embedder = Embedder(EmbedderConfig(), encoder_factory=fake_encoder, batched=False,
                        openai_config=HostedProviderConfig(base_url=f"{fake_openai.url}/v1"),
                        breaker=BreakerConfig(cooldown_s=0.05))
    fake_openai.enqueue(Fault(status=401))  # a rejected key opens it at once
    with pytest.raises(ProviderError):
        await embedder.embed(EmbedRequest(["cells"], SMALL))
    await asyncio.sleep(0.06)
    yield embedder
    await embedder.aclose()


async def breaker_state(embedder: Embedder) -> object:
    return (await embedder.breakers())[f"openai/{SMALL}"]["state"]


async def test_a_cancelled_probe_lets_the_next_call_through(half_open: Embedder, fake_openai) -> None:
    fake_openai.enqueue(Fault(delay_s=5))
    probe = asyncio.ensure_future(half_open.embed(EmbedRequest(["atoms"], SMALL)))
    await asyncio.sleep(0.2)
    probe.cancel()  # the caller left
    with pytest.raises(asyncio.CancelledError):
        await probe
    result = await half_open.embed(EmbedRequest(["atoms"], SMALL))
    assert len(result.vectors) == 1
    assert await breaker_state(half_open) == "closed"


async def test_an_answer_without_usage_is_a_success_with_estimated_tokens(
        half_open: Embedder, fake_openai) -> None:
    fake_openai.enqueue(Reply(usage=False))
    result = await half_open.embed(EmbedRequest(["plants make sugar"], SMALL))
    assert len(result.vectors) == 1 and result.prompt_tokens > 0
    assert await breaker_state(half_open) == "closed"


class Broken:
    """An encoder whose model no longer answers as it should."""

    model, dims = "all-minilm-l6-v2", 384

    def __init__(self, vector: np.ndarray | None = None):
        self._vector = vector

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._vector is None:
            raise RuntimeError("the model's context is gone")
        return np.stack([self._vector for _ in texts])


@pytest.mark.parametrize("encoder", [Broken(), Broken(np.zeros(3, np.float32)),
                                     Broken(np.full(384, np.nan, np.float32))])
async def test_the_health_check_fails_when_the_encoder_does(encoder: Broken) -> None:
    embedder = Embedder(EmbedderConfig(), encoder_factory=lambda *_: encoder, batched=False)
    with pytest.raises(RuntimeError, match="encoder"):
        await embedder.check_health()
    await embedder.aclose()


async def test_the_health_check_encodes_and_fails_once_closed() -> None:
    embedder = Embedder(EmbedderConfig(), encoder_factory=fake_encoder, batched=False)
    await embedder.check_health()
    await embedder.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await embedder.check_health()
