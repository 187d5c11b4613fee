"""scripts/haproxy: Ray's HAProxy, started as Ray starts it (`-db -f config`) with the options of
Ray's generated config that decide what a client's leaving does, tells the replica at once when a
client leaves a request whose response has not begun (the bundled binary, splicing, never does)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from tests.ports import free_port

WRAPPER = Path(__file__).resolve().parents[2] / "scripts" / "haproxy"
# From ray/serve/_private/haproxy_templates.py (HAPROXY_CONFIG_TEMPLATE's defaults).
CONFIG = """global
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option abortonclose
    option splice-request
    option splice-response
    option http-no-delay
frontend ingress
    bind 127.0.0.1:{frontend}
    default_backend replica
backend replica
    http-reuse always
    server router 127.0.0.1:{replica}
"""


class Replica:
    """A server that takes a request and never answers: it records when its connection ends."""

    def __init__(self) -> None:
        self.request = asyncio.Event()
        self.gone = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(5)
        self.request.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # b"" at the close, or ConnectionResetError at an abort
        self.gone.set()
        writer.close()


@contextlib.asynccontextmanager
async def ingress(config: Path, replica: Replica) -> AsyncIterator[int]:
    """HAProxy through scripts/haproxy before `replica`; yields its port."""
    server = await asyncio.start_server(replica, "127.0.0.1", 0)
    frontend = free_port()
    config.write_text(CONFIG.format(frontend=frontend,
                                    replica=server.sockets[0].getsockname()[1]))
    haproxy = await asyncio.create_subprocess_exec(
        str(WRAPPER), "-db", "-f", str(config), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": str(WRAPPER)})
    try:
        await _listening(frontend)
        yield frontend
    finally:
        haproxy.terminate()
        await haproxy.wait()
        server.close()


async def _listening(port: int, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)


async def test_a_client_gone_before_the_response_begins_closes_the_replica_connection(
        tmp_path: Path) -> None:
    replica = Replica()
    async with ingress(tmp_path / "haproxy.cfg", replica) as port:
        _, client = await asyncio.open_connection("127.0.0.1", port)
        client.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: learnx\r\n"
                     b"content-length: 5\r\n\r\n")
        await client.drain()
        await asyncio.sleep(0.1)
        client.write(b"hello")  # the body in a segment of its own, as httpx sends it
        await asyncio.wait_for(replica.request.wait(), 5)
        client.close()
        await asyncio.wait_for(replica.gone.wait(), 2)
