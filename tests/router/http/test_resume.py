"""Streams that survive a dropped connection (router/http/runs.py), over real loopback HTTP: every
event of every streaming route has an id naming its run; a client cut off at a random point sends
the same request again with Last-Event-ID and gets the rest, on the same replica or on another one
sharing Redis: the text assembled equals an uninterrupted run's, no event is lost or repeated, the
model generated once and the ledger holds one record saying how many resumes it had. A foreign key
cannot resume; a stopped run stays stopped; an unknown or expired id is a 4xx, never a new
generation."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import RedisServer
from tests.fakes.inprocess import ADMIN_KEY, KEY, InProcess, config, start
from tests.fakes.scripted import Say
from tests.fakes.served import Event, Served, client, read

TEXT = " ".join(f"word{i}" for i in range(40))
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "stream": True,
                             "messages": [{"role": "user", "content": "Tell me a story"}]},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "stream": True, "prompt": "Once"},
    "/v1/responses": {"model": "gpt-4o-mini", "stream": True, "input": "Tell me a story"},
    "/api/v1/ai/generate-content": {"content": "Photosynthesis: plants make sugar from light.",
                                    "content_type": "summary", "model": "gpt-4o-mini"},
}


def text_of(path: str, events: list[Event]) -> str:
    """The text a stream's events carry, as a client assembles it."""
    out = []
    for event in events:
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        if path == "/v1/chat/completions" and data.get("choices"):
            out.append(data["choices"][0]["delta"].get("content") or "")
        elif path == "/v1/completions" and data.get("choices"):
            out.append(data["choices"][0]["text"])
        elif path == "/v1/responses" and data.get("type") == "response.output_text.delta":
            out.append(data["delta"])
        elif path == "/api/v1/ai/generate-content" and data.get("type") == "summary":
            out.append(data["content"])
    return "".join(out)


def terminal(path: str, events: list[Event]) -> bool:
    """The stream ended as it should: [DONE], or the Responses API's own last event."""
    if path == "/v1/responses":
        return json.loads(events[-1].data)["type"] in ("response.completed", "response.failed")
    return events[-1].data == "[DONE]"


def seqs(events: list[Event]) -> list[int]:
    return [int(e.id.rsplit(":", 1)[1]) for e in events if e.id]


@pytest_asyncio.fixture(loop_scope="function")
async def served(tmp_path: Any) -> AsyncIterator[Served]:
    api = start(config(tmp_path, router={"resume": {"grace_s": 5}}, artifacts={"enabled": False}))
    server = await Served(api).start()
    yield server
    await server.stop()
    await api.close()


@pytest_asyncio.fixture(loop_scope="function")
async def replicas(tmp_path: Any, own_redis: RedisServer) -> AsyncIterator[list[Served]]:
    """Two router replicas (two apps, one Redis, one ledger database)."""
    servers = []
    for _ in range(2):
        api = start(config(tmp_path, redis_url=own_redis.url, router={"resume": {"grace_s": 5}},
                           artifacts={"enabled": False}))
        servers.append(await Served(api).start())
    yield servers
    for server in servers:
        await server.stop()
        await server.api.close()


async def cut_and_resume(servers: list[Served], path: str, body: dict[str, Any],
                         rng: random.Random, cuts: int) -> tuple[list[Event], int]:
    """Read the stream, dropping the connection at `cuts` random points and reconnecting each time
    to a replica chosen at random; (every event received, the reconnects made)."""
    got: list[Event] = []
    resumes = 0  # reconnects
    headers: dict[str, str] = {}
    while True:
        server = rng.choice(servers)
        cut = rng.randint(1, 12) if resumes < cuts else None
        async with client(server.url) as http:
            response, events = await read(http, "POST", path, json=body, headers=headers,
                                          cut_after=cut)
        assert response.status_code == 200, response.text
        got += events
        if events and terminal(path, got):
            return got, resumes
        headers = {"Last-Event-ID": got[-1].id or ""}
        resumes += 1


@pytest.mark.parametrize("path", list(ROUTES))
async def test_every_event_of_every_stream_names_its_run(served: Served, path: str) -> None:
    served.api.openai.enqueue(Say(TEXT))
    async with client(served.url) as http:
        response, events = await read(http, "POST", path, json=ROUTES[path])
    run = response.headers["x-learnx-run-id"]
    assert [e.id for e in events] == [f"{run}:{n}" for n in range(1, len(events) + 1)]
    assert text_of(path, events) == TEXT and terminal(path, events)


@pytest.mark.parametrize("path", list(ROUTES))
async def test_a_stream_cut_at_random_points_is_resumed_whole(served: Served, path: str) -> None:
    rng = random.Random(path)
    served.api.openai.enqueue(Say(TEXT))
    async with client(served.url) as http:
        _, whole = await read(http, "POST", path, json=ROUTES[path])
    for cuts in (1, 3):
        user = f"cut-{cuts}-{rng.random()}"
        body = {**ROUTES[path], **_user(path, user)}
        served.api.openai.enqueue(Say(TEXT, word_delay_s=0.005))
        calls = len(served.api.openai.calls)
        got, resumes = await cut_and_resume([served], path, body, rng, cuts)
        assert text_of(path, got) == text_of(path, whole) == TEXT
        assert seqs(got) == list(range(1, len(whole) + 1))  # none lost, none twice
        assert len(served.api.openai.calls) == calls + 1  # one generation
        (record,) = await served.api.records(user)
        assert record["outcome"] == "success" and resumes == cuts
        assert 0 < record["resumes"] <= resumes  # a reconnect after the end only replays it


async def both(replicas: list[Served], user: str) -> list[dict[str, Any]]:
    """The records of `user` in the ledger database the replicas share."""
    await replicas[1].api.records(user)  # flushes its ledger
    return await replicas[0].api.records(user)


def _user(path: str, user: str) -> dict[str, str]:
    return {"user_id": user} if path.startswith("/api/") else {"user": user}


async def test_a_reconnect_to_another_replica_resumes_the_run(replicas: list[Served]) -> None:
    rng = random.Random(7)
    for path, body in ROUTES.items():
        for server in replicas:
            server.api.openai.enqueue(Say(TEXT, word_delay_s=0.005))
        user = f"replicas-{path}"
        got, resumes = await cut_and_resume(replicas, path, {**body, **_user(path, user)}, rng, 4)
        assert text_of(path, got) == TEXT, path
        assert seqs(got) == list(range(1, seqs(got)[-1] + 1))
        records = await both(replicas, user)
        assert [r["outcome"] for r in records] == ["success"]
        assert 0 < records[0]["resumes"] <= resumes  # those made while it generated
    generations = sum(len(s.api.openai.calls) for s in replicas)
    assert generations == len(ROUTES)


async def open_run(server: Served, body: dict[str, Any], cut_after: int = 3,
                   path: str = "/v1/chat/completions") -> tuple[str, list[Event]]:
    """Start a stream and drop it after a few events: (the last event's id, the events)."""
    async with client(server.url) as http:
        _, events = await read(http, "POST", path, json=body, cut_after=cut_after)
    assert events[-1].id is not None
    return events[-1].id, events


CHAT = ROUTES["/v1/chat/completions"]


async def test_only_the_key_that_started_a_run_resumes_or_stops_it(served: Served) -> None:
    served.api.openai.enqueue(Say(TEXT, word_delay_s=0.02))
    last, _ = await open_run(served, CHAT)
    run = last.split(":")[0]
    async with client(served.url, ADMIN_KEY) as other:
        response, _ = await read(other, "POST", "/v1/chat/completions", json=CHAT,
                                 headers={"Last-Event-ID": last})
        assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"
        assert (await other.get(f"/v1/runs/{run}/events")).status_code == 404
        assert (await other.post(f"/v1/runs/{run}/cancel")).status_code == 404
    async with client(served.url) as http:  # the owner still can
        response, events = await read(http, "POST", "/v1/chat/completions", json=CHAT,
                                      headers={"Last-Event-ID": last})
    assert response.status_code == 200 and events[-1].data == "[DONE]"


async def test_a_stopped_run_stays_stopped(served: Served) -> None:
    served.api.openai.enqueue(Say(TEXT, word_delay_s=0.02))
    body = {**CHAT, "user": "stopper"}
    async with client(served.url) as http, http.stream(
            "POST", "/v1/chat/completions", json=body) as live:
        run = live.headers["x-learnx-run-id"]
        lines = live.aiter_lines()
        await anext(lines)
        stopped = await http.post(f"/v1/runs/{run}/cancel")
        assert stopped.json() == {"id": run, "object": "run", "status": "stopped"}
        rest = [line async for line in lines]
    errors = [json.loads(line[6:]) for line in rest if '"error"' in line]
    assert errors and errors[0]["error"]["code"] == "run_stopped", rest[-6:]
    assert "data: [DONE]" in rest[-3:]
    async with client(served.url) as http:
        for headers in ({"Last-Event-ID": f"{run}:1"},):
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "run_stopped"
        assert (await http.get(f"/v1/runs/{run}/events?after=1")).status_code == 409
    (record,) = await served.api.records("stopper")
    assert (record["outcome"], record["status"]) == ("stopped", 499)
    assert 0 < record["output_tokens"] < len(TEXT.split())


async def test_unknown_malformed_or_mismatched_ids_are_4xx_never_a_generation(
        served: Served) -> None:
    served.api.openai.enqueue(Say(TEXT, word_delay_s=0.02))
    last, _ = await open_run(served, CHAT)
    calls = len(served.api.openai.calls)
    async with client(served.url) as http:
        for header, status, code in (
                ("run_" + "0" * 32 + ":3", 404, "run_not_found"),
                ("not-an-id", 400, None),
                (last, 422, "run_mismatch")):
            body = {**CHAT, "user": "someone-else"} if status == 422 else CHAT
            response = await http.post("/v1/chat/completions", json=body,
                                       headers={"Last-Event-ID": header})
            assert response.status_code == status, response.text
            assert response.json()["error"]["param"] == "Last-Event-ID"
            assert code is None or response.json()["error"]["code"] == code
        assert (await http.get("/v1/runs/run_x/events")).status_code == 400
    assert len(served.api.openai.calls) == calls


async def test_a_finished_run_replays_its_tail_by_header_or_by_route(served: Served) -> None:
    served.api.openai.enqueue(Say(TEXT))
    async with client(served.url) as http:
        _, whole = await read(http, "POST", "/v1/chat/completions", json=CHAT)
        run = whole[0].id.split(":")[0]  # type: ignore[union-attr]
        _, by_header = await read(http, "POST", "/v1/chat/completions", json=CHAT,
                                  headers={"Last-Event-ID": f"{run}:5"})
        _, by_route = await read(http, "GET", f"/v1/runs/{run}/events?after=5")
    assert by_header == by_route == whole[5:]


async def test_a_reconnect_with_an_idempotency_key_follows_the_run(served: Served) -> None:
    served.api.openai.enqueue(Say(TEXT, word_delay_s=0.01))
    key = {"Idempotency-Key": "resume-with-a-key"}
    async with client(served.url) as http:
        _, first = await read(http, "POST", "/v1/chat/completions", json=CHAT, headers=key,
                              cut_after=4)
        response, rest = await read(http, "POST", "/v1/chat/completions", json=CHAT,
                                    headers={**key, "Last-Event-ID": first[-1].id or ""})
    assert response.status_code == 200 and "idempotent-replayed" not in response.headers
    assert text_of("/v1/chat/completions", first + rest) == TEXT


async def test_a_run_nobody_came_back_to_is_cancelled_after_the_grace_period(
        tmp_path: Any) -> None:
    api = start(config(tmp_path, router={"resume": {"grace_s": 0.3}}))
    server = await Served(api).start()
    try:
        api.openai.enqueue(Say(TEXT, word_delay_s=0.05))
        last, _ = await open_run(server, {**CHAT, "user": "gone"})
        (record,) = await _eventually(api, "gone")
        assert (record["outcome"], record["status"]) == ("client_disconnected", 499)
        assert record["output_tokens"] < len(TEXT.split())  # cancelled, not run to its end
        async with client(server.url) as http:
            response = await http.post("/v1/chat/completions", json={**CHAT, "user": "gone"},
                                       headers={"Last-Event-ID": last})
        assert response.status_code == 410 and response.json()["error"]["code"] == "run_expired"
    finally:
        await server.stop()
        await api.close()


async def _eventually(api: InProcess, user: str) -> list[dict[str, Any]]:
    for _ in range(100):
        found = await api.records(user)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record of {user}")


async def test_a_stop_sent_to_another_replica_stops_the_run(replicas: list[Served]) -> None:
    a, b = replicas
    a.api.openai.enqueue(Say(TEXT, word_delay_s=0.03))
    body = {**CHAT, "user": "stopped-elsewhere"}
    async with client(a.url) as on_a, client(b.url) as on_b, on_a.stream(
            "POST", "/v1/chat/completions", json=body) as live:
        run = live.headers["x-learnx-run-id"]
        lines = live.aiter_lines()
        await anext(lines)
        stopped = await on_b.post(f"/v1/runs/{run}/cancel")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        rest = [line async for line in lines]
        assert any('"run_stopped"' in line for line in rest)
        for http in (on_a, on_b):
            again = await http.post("/v1/chat/completions", json=body,
                                    headers={"Last-Event-ID": f"{run}:1"})
            assert again.status_code == 409, again.text
    (record,) = await both(replicas, "stopped-elsewhere")
    assert record["outcome"] == "stopped"


async def test_a_follower_on_another_replica_keeps_the_run_past_its_grace(
        tmp_path: Any, own_redis: RedisServer) -> None:
    servers = [await Served(start(config(tmp_path, redis_url=own_redis.url,
                                         router={"resume": {"grace_s": 0.2}}))).start()
               for _ in range(2)]
    a, b = servers
    try:
        a.api.openai.enqueue(Say(TEXT, word_delay_s=0.03))  # about 1.2 s: several grace periods
        body = {**CHAT, "user": "followed-elsewhere"}
        last, first = await open_run(a, body, cut_after=2)
        async with client(b.url) as http:
            response, rest = await read(http, "POST", "/v1/chat/completions", json=body,
                                        headers={"Last-Event-ID": last})
        assert response.status_code == 200
        assert text_of("/v1/chat/completions", first + rest) == TEXT
        (record,) = await both(servers, "followed-elsewhere")
        assert (record["outcome"], record["resumes"]) == ("success", 1)
    finally:
        for server in servers:
            await server.stop()
            await server.api.close()


async def test_redis_keeps_each_run_within_its_bounds(tmp_path: Any, own_redis: RedisServer,
                                                      redis_client: Any) -> None:
    api = start(config(tmp_path, redis_url=own_redis.url,
                       router={"resume": {"max_events": 10, "max_bytes": 2000, "keep_s": 30}}))
    server = await Served(api).start()
    try:
        api.openai.enqueue(Say(TEXT))
        async with client(server.url) as http:
            response, events = await read(http, "POST", "/v1/chat/completions", json=CHAT)
        run = response.headers["x-learnx-run-id"]
        key = f"learnx:run:{run}"
        for _ in range(50):  # written in the background
            if (await redis_client.hget(f"{key}:meta", "status")) == b"completed":
                break
            await asyncio.sleep(0.02)
        kept = await redis_client.xrange(key)
        frames = [fields[b"f"] for _, fields in kept if b"f" in fields]
        assert len(events) > 10 and len(frames) <= 10 and sum(map(len, frames)) <= 2000
        assert kept[-1][1] == {b"end": b"completed"}
        assert 0 < await redis_client.ttl(key) <= 30 and await redis_client.ttl(f"{key}:meta") <= 60
        async with client(server.url) as http:
            old = await http.post("/v1/chat/completions", json=CHAT,
                                  headers={"Last-Event-ID": f"{run}:1"})
        assert old.status_code == 410
    finally:
        await server.stop()
        await api.close()


async def test_the_official_sdk_streams_as_before_ignoring_the_ids(served: Served) -> None:
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0)
    served.api.openai.enqueue(Say(TEXT), Say(TEXT))
    chunks = [c async for c in await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    async with sdk.responses.stream(model="gpt-4o-mini", input="Tell me") as stream:
        final = await stream.get_final_response()
    assert final.output_text == TEXT
    await sdk.close()


async def test_without_redis_answering_streams_still_resume_on_their_own_replica(
        tmp_path: Any) -> None:
    from tests.ports import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    servers = [await Served(start(config(tmp_path, redis_url=down,
                                         router={"resume": {"grace_s": 5}}))).start()
               for _ in range(2)]
    a, b = servers
    try:
        a.api.openai.enqueue(Say(TEXT, word_delay_s=0.01))
        last, first = await open_run(a, CHAT)
        async with client(b.url) as http:
            elsewhere = await http.post("/v1/chat/completions", json=CHAT,
                                        headers={"Last-Event-ID": last})
        assert elsewhere.status_code == 503
        assert elsewhere.json()["error"]["code"] == "runs_unavailable"
        async with client(a.url) as http:
            response, rest = await read(http, "POST", "/v1/chat/completions", json=CHAT,
                                        headers={"Last-Event-ID": last})
        assert response.status_code == 200
        assert text_of("/v1/chat/completions", first + rest) == TEXT
    finally:
        for server in servers:
            await server.stop()
            await server.api.close()
