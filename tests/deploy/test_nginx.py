"""The real nginx with deploy/nginx/templates/learnx.conf.template in front of the service on the
two-node cluster, beside a stand-in for the legacy Node AI path: SSE passes event by event, bodies and
X-Request-Id pass, a client leaving through nginx cancels the generation, and the rollout splits users
10 / 50 / 100 % (sticky, monotone), switched by one variable."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.deploy.cluster import poll
from tests.deploy.conftest import HEADERS, App
from tests.deploy.nginx import Nginx
from tests.fakes import FakeOpenAI, Reply

USERS = 2000
TOLERANCE = 3.0  # percentage points


class LegacyNode(BaseHTTPRequestHandler):
    """Stands in for the Node backend's AI routes: names itself in every answer."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps({"backend": "legacy-node", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def legacy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LegacyNode)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def nginx(cluster_app: App, legacy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    server = Nginx(tmp_path_factory.mktemp("nginx"), f"127.0.0.1:{cluster_app.port}", legacy)
    server.start(rollout_percent=100)
    yield server
    server.stop()
    assert "[crit]" not in server.error_log() and "[emerg]" not in server.error_log()


def sse_lines(client: httpx.Client, url: str, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> Iterator[tuple[float, str]]:
    """(seconds since the request was sent, data) for each SSE data line, as it arrives."""
    started = time.perf_counter()
    with client.stream("POST", url, json=body, headers={**HEADERS, **(headers or {})}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield time.perf_counter() - started, line[6:]


def content_times(events: Iterator[tuple[float, str]]) -> list[float]:
    times = []
    for at, data in events:
        if data == "[DONE]":
            break
        event = json.loads(data)
        text = event.get("content") if "content" in event else "".join(
            c["delta"].get("content") or "" for c in event.get("choices", []))
        if text:
            times.append(at)
    return times


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True,
                              "messages": [{"role": "user", "content": "Count."}]}),
    ("/api/v1/ai/generate-content", {"content": "Counting", "content_type": "explanation",
                                     "difficulty": 2, "user_id": "deploy-sse",
                                     "model": "gpt-4o-mini", "stream": True}),
])
def test_sse_events_pass_one_by_one(nginx: Nginx, fake_openai: FakeOpenAI, path: str,
                                    body: dict[str, Any]) -> None:
    fake_openai.enqueue(Reply(text="one two three four five six", chunk_delay_s=0.25))
    with httpx.Client(timeout=30) as client:
        times = content_times(sse_lines(client, nginx.url + path, body))
    assert len(times) >= 5, times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) > 0.15, f"events were held back and arrived together: {times}"


def test_first_event_through_nginx_as_fast_as_direct(cluster_app: App, nginx: Nginx) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    direct, proxied = [], []
    with httpx.Client(timeout=30) as client:
        for _ in range(15):  # alternate, so that both see the same machine load
            for base, samples in ((cluster_app.url, direct), (nginx.url, proxied)):
                samples.append(next(sse_lines(client, f"{base}/v1/chat/completions", body))[0])
    direct_ms, proxied_ms = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    print(f"\ntime to first SSE event, median of 15: direct {direct_ms:.1f} ms, "
          f"through nginx {proxied_ms:.1f} ms")
    assert proxied_ms - direct_ms < 20


def ledger_record(url: str, user: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{url}/api/v1/ai/usage/records", params={"user_id": user},
                         headers=HEADERS, timeout=10)
    response.raise_for_status()
    return next((r for r in response.json()["records"] if r["request_id"] == request_id), None)


def test_bodies_and_request_ids_pass(cluster_app: App, nginx: Nginx) -> None:
    user = f"deploy-body-{uuid.uuid4().hex[:8]}"
    # ~60 kB: more than nginx keeps in memory (16 kB), so it goes through its temp file.
    texts = [f"Photosynthesis {i}: " + "chlorophyll absorbs light ünïcödé " * 550 for i in range(3)]
    body = {"model": "all-minilm-l6-v2", "input": texts, "user": user}
    request_id = f"deploy-{uuid.uuid4().hex}"
    proxied = httpx.post(f"{nginx.url}/v1/embeddings", json=body, timeout=60,
                         headers={**HEADERS, "X-Request-Id": request_id})
    direct = httpx.post(f"{cluster_app.url}/v1/embeddings", json=body, headers=HEADERS, timeout=60)
    assert proxied.status_code == direct.status_code == 200, proxied.text
    assert proxied.json()["data"] == direct.json()["data"]
    assert proxied.headers["x-request-id"] == request_id
    assert poll(lambda: ledger_record(cluster_app.url, user, request_id), 10, "the ledger record")

    anonymous = httpx.post(f"{nginx.url}/v1/embeddings", json=body, headers=HEADERS, timeout=60)
    made_up = anonymous.headers["x-request-id"]  # nginx's $request_id, 32 hex digits
    assert len(made_up) == 32 and int(made_up, 16) >= 0
    assert poll(lambda: ledger_record(cluster_app.url, user, made_up), 10, "the ledger record")


def test_client_leaving_through_nginx_cancels_generation(cluster_app: App, nginx: Nginx) -> None:
    user, request_id = "deploy-disconnect", f"deploy-{uuid.uuid4().hex}"
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 2000, "user": user,
            "messages": [{"role": "user", "content": "Write a very long story about a cat."}]}
    with httpx.Client(timeout=30) as client:
        events = sse_lines(client, f"{nginx.url}/v1/chat/completions", body,
                           {"X-Request-Id": request_id})
        for _ in range(5):
            next(events)
        events.close()  # the client leaves: its connection to nginx closes
    left = time.monotonic()
    record = poll(lambda: ledger_record(cluster_app.url, user, request_id), 10, "the ledger record")
    assert record["outcome"] == "client_disconnected" and record["status"] == 499
    assert record["output_tokens"] < 500
    # llama.cpp runs one generation at a time: a short request answers at once only if the long one
    # really stopped.
    short = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(f"{cluster_app.url}/v1/chat/completions", json=short, headers=HEADERS,
                          timeout=60)
    assert response.headers["x-learnx-route"] == "local/smollm2-135m"
    print(f"\nrecorded as disconnected and the model free again {time.monotonic() - left:.2f}s "
          "after the client left")
    assert time.monotonic() - left < 5


def sides(nginx: Nginx, users: list[str]) -> dict[str, str]:
    """The side nginx sends each user's /api/v1/ai/ request to, read from the answer itself."""
    def one(client: httpx.Client, user: str) -> tuple[str, str]:
        response = client.get(f"{nginx.url}/api/v1/ai/health", headers={"X-User-Id": user})
        assert response.status_code == 200
        side = "legacy" if response.json().get("backend") == "legacy-node" else "learnx"
        header = response.headers["x-ai-backend"]
        assert header == ("legacy_node_ai" if side == "legacy" else "learnx_ai")
        return user, side

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as client, \
            ThreadPoolExecutor(16) as pool:
        return dict(pool.map(lambda u: one(client, u), users))


def test_rollout_splits_users_sticky_and_monotone(nginx: Nginx) -> None:
    users = [f"user-{n}" for n in range(USERS)]
    on_learnx: dict[int, set[str]] = {}
    for percent in (10, 50, 100):
        started = time.monotonic()
        nginx.set_rollout(percent)
        placed = sides(nginx, users)
        on_learnx[percent] = {u for u, side in placed.items() if side == "learnx"}
        share = 100 * len(on_learnx[percent]) / USERS
        print(f"\nrollout {percent} %: {share:.1f} % of {USERS} users on this service "
              f"({time.monotonic() - started:.1f}s)")
        assert abs(share - percent) <= TOLERANCE
        again = sides(nginx, users[:200])
        assert all(placed[u] == again[u] for u in again), "a user changed sides"
    assert on_learnx[10] <= on_learnx[50] <= on_learnx[100], "raising the share moved users back"

    nginx.set_rollout(0)  # rollback: every user on the legacy path, /v1/ still here
    assert set(sides(nginx, users[:200]).values()) == {"legacy"}
    assert httpx.get(f"{nginx.url}/v1/models", headers=HEADERS, timeout=10).status_code == 200
    nginx.set_rollout(100)

