"""The service on a real two-node Ray cluster: the local model's replicas are placed on the node that
offers the `llm` resource; losing that node under load moves requests to the hosted (fake) provider;
its return brings the replicas back; the router autoscales from 1 to 2 replicas under load and back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.deploy.cluster import poll
from tests.deploy.conftest import HEADERS, LLM, App, chat
from tests.fakes import FakeOpenAI, Reply


def llm_node_id(app: App) -> str:
    (node,) = [n for n in app.cluster.alive_nodes() if n.resources_total.get("llm")]
    return str(node.node_id)


def test_llm_replicas_are_pinned_to_the_llm_node(cluster_app: App) -> None:
    llm_node = llm_node_id(cluster_app)
    llm = cluster_app.cluster.replicas(LLM)
    others = cluster_app.cluster.replicas("Router") + cluster_app.cluster.replicas("Embedder")
    assert llm and all(a.node_id == llm_node for a in llm)
    assert others and all(a.node_id != llm_node for a in others)
    response = chat(cluster_app.url)
    assert response.status_code == 200
    assert response.headers["x-learnx-route"] == "local/smollm2-135m"


def test_router_autoscales_under_load_and_back(cluster_app: App, fake_openai: FakeOpenAI) -> None:
    cluster = cluster_app.cluster
    assert cluster.running_replicas("Router") == 1
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():  # each request stays in flight ~1 s on the hosted fake
            fake_openai.enqueue(Reply(text="one two three four five", chunk_delay_s=0.2))
            chat(cluster_app.url, model="gpt-4o-mini", stream=True)

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(load)
        try:
            started = time.monotonic()
            poll(lambda: cluster.running_replicas("Router") == 2, 60, "a second router replica")
            print(f"\nscaled up to 2 router replicas after {time.monotonic() - started:.1f}s of load")
        finally:
            stop.set()
    started = time.monotonic()
    poll(lambda: cluster.running_replicas("Router") == 1, 90, "the router to scale back to 1")
    print(f"scaled back to 1 replica {time.monotonic() - started:.1f}s after the load stopped")


def test_losing_the_llm_node_falls_back_then_recovers(cluster_app: App) -> None:
    cluster, url = cluster_app.cluster, cluster_app.url
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = chat(url)
            results.append((response.status_code, response.headers.get("x-learnx-route", "")))

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(load)
        try:
            poll(lambda: len(results) >= 4, 60, "requests served before the node stops")
            worker, old_node = cluster.workers.pop(), llm_node_id(cluster_app)
            stopped = time.monotonic()
            worker.stop()
            count = len(results)
            poll(lambda: sum(r == (200, "openai/gpt-4o-mini") for r in results[count:]) >= 4, 60,
                 "requests served by the hosted fake")
            print(f"\nnode stopped; hosted fallback serving {time.monotonic() - stopped:.1f}s later")
        finally:
            stop.set()
    assert all(status == 200 for status, _ in results), results
    poll(lambda: old_node not in {n.node_id for n in cluster.alive_nodes()}, 60,
         "the cluster to see the node gone")

    restarted = time.monotonic()
    cluster.start_worker(num_cpus=0, resources={"llm": 1})
    new_node = llm_node_id(cluster_app)
    poll(lambda: chat(url).headers.get("x-learnx-route") == "local/smollm2-135m", 120,
         "the local model to serve again", every_s=1)
    print(f"node back; local model serving {time.monotonic() - restarted:.1f}s after it restarted")
    assert [a.node_id for a in cluster.replicas(LLM)] == [new_node]
    ready = httpx.get(f"{url}/ready", headers=HEADERS, timeout=10)
    assert ready.status_code == 200, ready.text
