"""The nginx configuration as the official nginx image loads it (tests/deploy/nginx.py: the image's
conf.d/default.conf present, templates rendered over it), run by the real nginx in front of two
stand-in upstreams: the project's server is the one that answers, nginx starts without the legacy
host, users on this service fall back to the legacy path on 502/503/504, and a rollback by reload
lets a stream in flight finish."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.nginx import Nginx
from tests.ports import free_port


class Upstream(ThreadingHTTPServer):
    """Answers every request with `status` and a JSON body naming itself and the request; paths
    under /stream/ answer 200 with five SSE events, 0.4 s apart."""

    def __init__(self, name: str, status: int = 200):
        self.name, self.status = name, status
        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Upstream
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        if self.path.startswith("/api/v1/ai/stream/"):
            self._stream()
            return
        payload = json.dumps({"backend": self.server.name, "path": self.path, "body": body}).encode()
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for n in range(5):
            event = f"data: {self.server.name} {n}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(0.4)
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Callable[..., Upstream]]:
    """Makes stand-ins; closes them after the test."""
    made: list[Upstream] = []

    def make(name: str, status: int = 200) -> Upstream:
        made.append(Upstream(name, status))
        return made[-1]

    yield make
    for server in made:
        server.shutdown()
        server.server_close()


@pytest.fixture
def legacy(upstream: Callable[..., Upstream]) -> Upstream:
    return upstream("legacy-node")


def start(directory: Path, ai: str, legacy: str, percent: int, **options: str) -> Nginx:
    return Nginx(directory, ai, legacy, **options).start(rollout_percent=percent)


def answer(nginx: Nginx, path: str = "/api/v1/ai/generate-content",
           user: str = "user-1") -> httpx.Response:
    return httpx.post(f"{nginx.url}{path}", json={"content": "Photosynthesis"},
                      headers={"X-User-Id": user}, timeout=15)


def test_the_projects_server_replaces_the_images_default(tmp_path: Path, legacy: Upstream,
                                                         upstream: Callable[..., Upstream]) -> None:
    ai = upstream("learnx")
    nginx = start(tmp_path, ai.address, legacy.address, 100)
    try:
        # The image's default.conf has `server_name localhost`: had it survived, it would answer.
        for host in ("localhost", "learnx.example", "127.0.0.1"):
            health = httpx.get(f"{nginx.url}/nginx-health", headers={"Host": host}, timeout=5)
            assert (health.status_code, health.text) == (200, "ok\n"), host
            assert answer(nginx).json()["backend"] == "learnx"
        assert [p.name for p in (tmp_path / "conf.d").iterdir()] == ["default.conf"]
    finally:
        nginx.stop()


def test_starts_and_serves_without_the_legacy_host(tmp_path: Path,
                                                  upstream: Callable[..., Upstream]) -> None:
    ai = upstream("learnx")
    # Nothing answers DNS on this port: the legacy host cannot be resolved.
    nginx = start(tmp_path, ai.address, "legacy-backend.invalid:3000", 0,
                  resolver=f"127.0.0.1:{free_port()}")
    try:
        assert httpx.get(f"{nginx.url}/v1/models", timeout=5).json()["backend"] == "learnx"
        legacy_side = answer(nginx)
        assert legacy_side.status_code == 502
        assert legacy_side.headers["x-ai-backend"] == "legacy_node_ai"
    finally:
        nginx.stop()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_ai_errors_fall_back_to_legacy(tmp_path: Path, legacy: Upstream,
                                      upstream: Callable[..., Upstream], status: int) -> None:
    ai = upstream("learnx", status=status)
    nginx = start(tmp_path, ai.address, legacy.address, 100)
    try:
        response = answer(nginx)
        assert response.status_code == 200
        assert response.json() == {"backend": "legacy-node", "path": "/api/v1/ai/generate-content",
                                   "body": '{"content":"Photosynthesis"}'}
        assert response.headers["x-ai-backend"] == "legacy_node_ai"
        # /v1/ exists only here: its errors reach the caller.
        assert httpx.get(f"{nginx.url}/v1/models", timeout=5).status_code == status
    finally:
        nginx.stop()


def test_unreachable_ai_falls_back_and_other_errors_pass(tmp_path: Path, legacy: Upstream,
                                                         upstream: Callable[..., Upstream]) -> None:
    nginx = start(tmp_path, f"127.0.0.1:{free_port()}", legacy.address, 100)
    try:
        assert answer(nginx).json()["backend"] == "legacy-node"
    finally:
        nginx.stop()
    ai = upstream("learnx", status=400)
    nginx = start(tmp_path / "second", ai.address, legacy.address, 100)
    try:
        refused = answer(nginx)
        assert refused.status_code == 400 and refused.json()["backend"] == "learnx"
    finally:
        nginx.stop()


def test_rollback_by_reload_lets_a_stream_finish(tmp_path: Path, legacy: Upstream,
                                                 upstream: Callable[..., Upstream]) -> None:
    ai = upstream("learnx")
    nginx = start(tmp_path, ai.address, legacy.address, 100)
    events: list[str] = []

    def stream() -> None:
        with httpx.stream("GET", f"{nginx.url}/api/v1/ai/stream/1", timeout=15,
                          headers={"X-User-Id": "user-1"}) as response:
            events.extend(line for line in response.iter_lines() if line.startswith("data: "))

    try:
        reader = threading.Thread(target=stream)
        reader.start()
        time.sleep(0.6)  # the stream is under way
        nginx.set_rollout(0)  # reload; returns once the old workers (and so the stream) are done
        reader.join(timeout=15)
        assert events == [f"data: learnx {n}" for n in range(5)]
        assert answer(nginx).json()["backend"] == "legacy-node"
    finally:
        nginx.stop()
