"""A vLLM model under real Serve, its AsyncLLM a fake (tests/fakes/async_llm.py, a token every
10 ms): the replica publishes the load its wrapper counts as the same gauges as a llama.cpp one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.async_llm import fake_vllm_engine
from tests.fakes.graph import fake_graph
from tests.fakes.inprocess import LOCAL
from tests.metrics import samples

SLOTS = 3  # vllm.max_num_seqs here, no other test's


@pytest.fixture(scope="module")
def vllm_url(serve_root: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = {"name": LOCAL, "engine": "vllm", "vllm": {"max_num_seqs": SLOTS}}
    with fake_graph(tmp_path_factory.mktemp("vllm-graph"), "vllm", model, fake_vllm_engine) as prefix:
        yield f"{serve_root}{prefix}"


def vllm_gauges() -> dict[str, float]:
    """The gauges of this app's vLLM replica (the one with SLOTS slots), by metric."""
    replicas = {labels["replica"] for labels, value in samples("ray_learnx_llm_slots")
                if labels.get("model") == LOCAL and value == SLOTS}
    return {name: value for name in ("ray_learnx_llm_slots", "ray_learnx_llm_slots_busy",
                                     "ray_learnx_llm_queue_depth",
                                     "ray_learnx_llm_estimated_wait_seconds")
            for labels, value in samples(name) if labels.get("replica") in replicas}


def test_a_vllm_replica_publishes_its_queue_slots_and_wait(vllm_url: str) -> None:
    response = httpx.post(f"{vllm_url}/v1/chat/completions", timeout=60, json={
        "model": LOCAL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-learnx-route"] == f"local/{LOCAL}"
    deadline = time.monotonic() + 30  # the replica reports every 500 ms
    while len(gauges := vllm_gauges()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gauges["ray_learnx_llm_slots"] == SLOTS
    assert gauges["ray_learnx_llm_slots_busy"] == gauges["ray_learnx_llm_queue_depth"] == 0
    assert 0 < gauges["ray_learnx_llm_estimated_wait_seconds"] < 5
