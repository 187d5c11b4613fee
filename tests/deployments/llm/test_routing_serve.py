"""PrefixAffinityRouter under real Ray Serve: two replicas of a tiny deployment that answer with
their replica id, deployed with the options deployments/app.py gives LLMServer and called as the
Router calls LLMServer: from an ingress replica, through a DeploymentHandle (whose request router is
the one under test), with a GenerationParams first.

Each test runs twice: with Serve's queue length cache as it is (entries last 10 s) and with every
entry expired (RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S=0 in the calling replica), as the router sees
replicas after a quiet spell longer than that: it must ask them for their queues, and the requests
whose routing waits on that answer at the same time must each go where it was routed.

These tests can fail. Serve's default router picks the shorter queue of two replicas at random, so
with sequential requests (both queues empty) each of the 20 requests sharing a lesson would land on
either replica by a coin toss (all on one: 2 in 2^20); it fails every test here. With an imbalance
of 100 the busy owner keeps its lesson. The router as it was before these tests counted a replica
whose cache entry had expired as idle (the busy owner kept its lesson with expired queues), and its
FIFOMixin gave the replica chosen for one request to the oldest one waiting, of the other lesson
perhaps (the burst failed in 8 or more of 12 runs, with either cache)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from core.generation import GenerationParams
from deployments.llm.routing import BLOCK_CHARS, IMBALANCE, affinity_options


@ray.remote(num_cpus=0)
class Gate:
    """Holds the requests that ask to be held until released; counts those it holds."""

    def __init__(self) -> None:
        self._event, self._held = asyncio.Event(), 0

    async def wait(self) -> None:
        self._held += 1
        event = self._event
        await event.wait()

    def held(self) -> int:
        return self._held

    def release(self) -> None:
        self._event.set()
        self._event, self._held = asyncio.Event(), 0


class Where:
    def __init__(self, gate: ray.actor.ActorHandle) -> None:
        self._gate = gate

    async def __call__(self, params: GenerationParams, hold: bool = False) -> str:
        if hold:
            await self._gate.wait.remote()
        return serve.get_replica_context().replica_id.unique_id


class Asker:
    """The Router's part: builds the request and sends it through its handle."""

    def __init__(self, where: DeploymentHandle) -> None:
        self._where = where

    async def __call__(self, topic: str, question: str, hold: bool = False) -> str:
        params = GenerationParams([{"role": "system", "content": lesson(topic)},
                                   {"role": "user", "content": question}], 8)
        replica: str = await self._where.remote(params, hold=hold)
        return replica

    async def burst(self, questions: list[tuple[str, str]]) -> list[str]:
        """All at once, from one replica: the router routes them concurrently."""
        return list(await asyncio.gather(*(self(topic, q) for topic, q in questions)))


def lesson(topic: str) -> str:
    text = f"{topic} is today's lesson; read it closely before you answer. " * 30
    assert len(text) >= 6 * BLOCK_CHARS
    return text


@pytest.fixture(scope="module", params=["10", "0"], ids=["cached-queues", "expired-queues"])
def where(serve_root: str, request: pytest.FixtureRequest
          ) -> Iterator[tuple[DeploymentHandle, ray.actor.ActorHandle]]:
    gate = Gate.remote()  # type: ignore[attr-defined]
    cache_s = {"RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S": request.param}
    # max_ongoing_requests well above what a test holds: only the router's own rule moves requests.
    where = serve.deployment(name="Where", num_replicas=2, max_ongoing_requests=32,
                             ray_actor_options={"num_cpus": 0}, **affinity_options())(Where)
    asker = serve.deployment(name="Asker", max_ongoing_requests=32, ray_actor_options={
        "num_cpus": 0, "runtime_env": {"env_vars": cache_s}})(Asker)
    handle = serve.run(asker.bind(where.bind(gate)), name="prefix-affinity", route_prefix=None)
    yield handle, gate
    serve.delete("prefix-affinity")
    ray.kill(gate)


def send(handle: DeploymentHandle, topic: str, question: str, hold: bool = False
         ) -> DeploymentResponse:
    return handle.remote(topic, question, hold=hold)


def ask(handle: DeploymentHandle, topic: str, question: str) -> str:
    answer: str = send(handle, topic, question).result(timeout_s=30)
    return answer


def hold(handle: DeploymentHandle, gate: ray.actor.ActorHandle, topic: str, count: int
         ) -> list[DeploymentResponse]:
    """`count` more requests on `topic` held in their replicas, each sent once the last arrived."""
    held, before = [], ray.get(gate.held.remote())
    for i in range(count):
        held.append(send(handle, topic, f"held {i}", hold=True))
        deadline = time.monotonic() + 30
        while ray.get(gate.held.remote()) < before + i + 1:
            assert time.monotonic() < deadline, "a held request never reached a replica"
            time.sleep(0.01)
    return held


def test_requests_sharing_a_lesson_go_to_the_replica_that_holds_it(
        where: tuple[DeploymentHandle, ray.actor.ActorHandle]) -> None:
    handle, _ = where
    owner = ask(handle, "Photosynthesis", "Why are leaves green?")
    assert {ask(handle, "Photosynthesis", f"Question {i}?") for i in range(20)} == {owner}


def owners(handle: DeploymentHandle, gate: ray.actor.ActorHandle, a: str, b: str
           ) -> tuple[str, str]:
    """Lesson `a` on one replica, then `b` on the other: first asked while `a`'s replica is busy,
    nobody holds `b`, so it goes to the shorter of the two queues."""
    owner_a = ask(handle, a, "Where do we start?")
    held = hold(handle, gate, a, 1)
    owner_b = ask(handle, b, "Where do we start?")
    gate.release.remote()
    assert [r.result(timeout_s=30) for r in held] == [owner_a]
    return owner_a, owner_b


def test_two_lessons_can_be_held_by_different_replicas(
        where: tuple[DeploymentHandle, ray.actor.ActorHandle]) -> None:
    handle, gate = where
    owner_a, owner_b = owners(handle, gate, "Mitosis", "Plate tectonics")
    assert owner_b != owner_a
    for i in range(10):  # each lesson stays with its replica, now that both queues are empty
        assert ask(handle, "Mitosis", f"Phase {i}?") == owner_a
        assert ask(handle, "Plate tectonics", f"Fault {i}?") == owner_b


def test_a_busy_owner_sends_the_lesson_elsewhere(
        where: tuple[DeploymentHandle, ray.actor.ActorHandle]) -> None:
    handle, gate = where
    owner = ask(handle, "Fractions", "What is a half of a third?")
    held = hold(handle, gate, "Fractions", IMBALANCE)
    # The owner's queue is IMBALANCE longer than the other's: still the owner's.
    assert ask(handle, "Fractions", "Is 2/4 equal to 1/2?") == owner
    held += hold(handle, gate, "Fractions", 1)
    # One more than IMBALANCE: the other replica, and the lesson is now known there.
    elsewhere = ask(handle, "Fractions", "What is 3/4 of 8?")
    gate.release.remote()
    assert {r.result(timeout_s=30) for r in held} == {owner}
    assert elsewhere != owner
    assert ask(handle, "Fractions", "Which is bigger, 2/3 or 3/5?") == elsewhere


def test_a_burst_from_two_lessons_keeps_each_with_its_replica(
        where: tuple[DeploymentHandle, ray.actor.ActorHandle]) -> None:
    handle, gate = where
    owner_a, owner_b = owners(handle, gate, "Cells", "Rivers")
    questions = [(topic, f"Question {i}?") for i in range(8) for topic in ("Cells", "Rivers")]
    answers = handle.burst.remote(questions).result(timeout_s=30)
    assert answers == [owner_a, owner_b] * 8
