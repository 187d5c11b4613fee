"""The local model's replica dies under load: requests fall back to a hosted provider, nothing hangs
or is cut silently, and Ray Serve brings the replica back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import ray

from tests.conftest import AUTH
from tests.router.run.test_faults import call

MODEL = "smollm2-135m"


def kill_llm_replica() -> None:
    (replica,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                  if f"LLMServer:{MODEL}" in a["name"] and "SERVE_REPLICA" in a["name"]]
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)


def test_killed_replica_falls_back_and_comes_back(serve_url, fake_openai) -> None:
    def request(stream: bool):
        return call(serve_url, MODEL, stream, max_tokens=48)

    with ThreadPoolExecutor(8) as pool:
        load = [pool.submit(request, n % 2 == 0) for n in range(8)]
        time.sleep(1.0)
        kill_llm_replica()
        results = [f.result(timeout=60) for f in load]

    providers = set()
    for status, body, events, elapsed in results:
        assert status == 200
        assert elapsed < 20
        route = body.get("route") or next(e["route"] for e in reversed(events) if e.get("route"))
        providers.add(route["provider"])
    assert "openai" in providers  # at least one request was rescued by the hosted fake

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready = httpx.get(f"{serve_url}/ready", timeout=10, headers=AUTH)
        if ready.status_code == 200:
            break
        time.sleep(1)
    assert ready.status_code == 200, "Serve did not bring the replica back"
    httpx.post(f"{serve_url}/health/providers/reset", timeout=10, headers=AUTH)
    status, body, _, _ = request(stream=False)
    assert (status, body["route"]["provider"]) == (200, "local")
