"""Load is health too: a local model that expects to keep a request waiting past
router.spill_over_wait_s hands it to the next candidate (in process, the fake engine's queue)."""

from __future__ import annotations

import time
from typing import Any

from core.config import VLLMSettings
from core.generation import GenerationParams
from tests.fakes.async_llm import fake_vllm
from tests.fakes.inprocess import LOCAL, EngineProvider, InProcess, config, start
from tests.fakes.scripted import ScriptedProvider

LESSON = {"role": "user", "content": "Explain photosynthesis."}


def small(**extra: Any) -> dict[str, Any]:
    return {"model": "small", "messages": [LESSON], "max_tokens": 8, "user": "learner-1", **extra}


async def test_a_busy_local_model_spills_over_and_the_ledger_says_so(api: InProcess) -> None:
    api.engine.expected_wait_s = 9.0  # past the 2 s default
    spilled = await api.post("/v1/chat/completions", small())
    assert spilled.status_code == 200
    assert spilled.headers["x-learnx-route"].startswith(("openai/", "anthropic/"))
    record = (await api.records("learner-1"))[-1]
    path = record["fallback_path"]  # which requests spilled over
    assert LOCAL in path and "busy" in path
    assert record["cost_usd"] > 0  # ... and what they cost
    health = (await api.client.get("/health/providers")).json()["breakers"]
    assert health[f"local/{LOCAL}"]["consecutive_failures"] == 0  # load is not an outage

    api.engine.expected_wait_s = 0.5  # the queue drained: back to the free local model
    back = await api.post("/v1/chat/completions", small())
    assert back.headers["x-learnx-route"] == f"local/{LOCAL}"


async def test_streams_spill_over_before_their_first_token(api: InProcess) -> None:
    api.engine.expected_wait_s = 9.0
    async with api.client.stream("POST", "/v1/chat/completions", json=small(stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["x-learnx-route"].startswith(("openai/", "anthropic/"))


async def test_without_another_candidate_it_waits_and_a_full_queue_is_a_429(tmp_path: Any) -> None:
    local_only = start(config(tmp_path), hosted=False)
    try:
        local_only.engine.expected_wait_s = 9.0  # the last candidate queues, whatever the wait
        waited = await local_only.post("/v1/chat/completions", small())
        assert waited.status_code == 200
        local_only.engine.queue_full = True
        refused = await local_only.post("/v1/chat/completions", small())
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 9
        assert refused.json()["error"]["code"] == "model_busy"
    finally:
        await local_only.close()


async def test_spill_over_can_be_turned_off(tmp_path: Any) -> None:
    patient = start(config(tmp_path, router={"spill_over_wait_s": None}))
    try:
        patient.engine.expected_wait_s = 9.0
        served = await patient.post("/v1/chat/completions", small())
        assert served.headers["x-learnx-route"] == f"local/{LOCAL}"
    finally:
        await patient.close()


def test_a_busy_replica_across_serve_is_a_429_with_its_wait() -> None:
    """Across Serve the engine's EngineBusy arrives as a RayTaskError of that type."""
    from ray.exceptions import RayTaskError

    from core.errors import ModelBusy, status_of
    from core.generation import EngineBusy
    from router.run.providers.local import engine_error

    wrapped = RayTaskError("stream", "traceback", EngineBusy("9 wait for 8 slots", 7.5))
    error = engine_error("local", LOCAL, wrapped.as_instanceof_cause())
    assert isinstance(error, ModelBusy) and status_of(error) == 429
    assert error.headers() == {"Retry-After": "8"}
    assert error.message == f"{LOCAL} is busy: 9 wait for 8 slots; retry later"


async def test_a_vllm_model_spills_over_by_the_wait_it_measures(tmp_path: Any) -> None:
    """vLLM's wrapper counts its own sequences: with its one sequence held by a long answer, it
    expects a newcomer to wait past the 2 s limit and refuses it; the answer done, it serves."""
    engine, _ = fake_vllm(VLLMSettings(max_num_seqs=1), time.monotonic, step_s=0.001)
    on_vllm = start(config(tmp_path), providers={  # the local provider's engine replaced too
        "local": EngineProvider({LOCAL: engine}), "openai": ScriptedProvider("openai"),
        "anthropic": ScriptedProvider("anthropic")})
    try:
        free = await on_vllm.post("/v1/chat/completions", small())
        assert free.headers["x-learnx-route"] == f"local/{LOCAL}"
        long = engine.generate(GenerationParams([LESSON], max_tokens=100_000))
        await anext(long)  # it holds the only sequence
        spilled = await on_vllm.post("/v1/chat/completions", small())
        assert spilled.headers["x-learnx-route"].startswith(("openai/", "anthropic/"))
        assert "busy" in (await on_vllm.records("learner-1"))[-1]["fallback_path"]
        await long.aclose()
        back = await on_vllm.post("/v1/chat/completions", small())
        assert back.headers["x-learnx-route"] == f"local/{LOCAL}"
    finally:
        await on_vllm.close()
