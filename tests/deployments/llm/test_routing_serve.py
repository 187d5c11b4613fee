"""PrefixAffinityRouter under real Ray Serve: two replicas of a tiny deployment that answer with
their replica id, deployed with the options deployments/app.py gives LLMServer and called as the
Router calls LLMServer: from an ingress replica, through a DeploymentHandle (whose request router is
the one under test), with a GenerationParams first.

These tests can fail: Serve's default router picks the shorter queue of two replicas at random, so
with sequential requests (both queues empty) each of the 20 requests sharing a lesson would land on
either replica by a coin toss (all on one: 2 in 2^20)."""

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


def lesson(topic: str) -> str:
    text = f"{topic} is today's lesson; read it closely before you answer. " * 30
    assert len(text) >= 6 * BLOCK_CHARS
    return text


@pytest.fixture(scope="module")
def where(serve_root: str) -> Iterator[tuple[DeploymentHandle, ray.actor.ActorHandle]]:
    gate = Gate.remote()  # type: ignore[attr-defined]
    # max_ongoing_requests well above what a test holds: only the router's own rule moves requests.
    where = serve.deployment(name="Where", num_replicas=2, max_ongoing_requests=32,
                             ray_actor_options={"num_cpus": 0}, **affinity_options())(Where)
    asker = serve.deployment(name="Asker", max_ongoing_requests=32,
                             ray_actor_options={"num_cpus": 0})(Asker)
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


def test_two_lessons_can_be_held_by_different_replicas(
        where: tuple[DeploymentHandle, ray.actor.ActorHandle]) -> None:
    handle, gate = where
    owner_a = ask(handle, "Mitosis", "What is a spindle?")
    held = hold(handle, gate, "Mitosis", 1)
    # Nobody holds this lesson: the shorter of the two queues, the replica not holding Mitosis.
    owner_b = ask(handle, "Plate tectonics", "What moves the plates?")
    gate.release.remote()
    assert [r.result(timeout_s=30) for r in held] == [owner_a]
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
