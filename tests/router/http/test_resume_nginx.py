"""Streams cut and resumed through the real nginx with the project's template
(deploy/nginx/templates/default.conf.template, as tests/deploy/nginx.py runs it), balancing two
router replicas that share Redis: ids and Last-Event-ID pass both ways, a client that leaves
closes nginx's upstream connection (the run goes on for its grace period), and the reconnect
lands on either replica. The text assembled equals an uninterrupted run's, every event arrives
once, the model generated once, the ledger holds one record."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import RedisServer
from tests.deploy.nginx import Nginx
from tests.fakes.inprocess import config, start
from tests.fakes.scripted import Say
from tests.fakes.served import Served
from tests.router.http.test_resume import ROUTES, TEXT, both, cut_and_resume, seqs, text_of


@pytest_asyncio.fixture(loop_scope="function")
async def replicas(tmp_path: Any, own_redis: RedisServer) -> AsyncIterator[list[Served]]:
    servers = []
    for _ in range(2):
        api = start(config(tmp_path, redis_url=own_redis.url, router={"resume": {"grace_s": 5}},
                           artifacts={"enabled": False}))
        servers.append(await Served(api).start())
    yield servers
    for server in servers:
        await server.stop()
        await server.api.close()


@pytest.fixture
def nginx_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "nginx").mkdir()
    yield tmp_path / "nginx"


async def test_streams_cut_through_nginx_resume_on_either_replica(
        replicas: list[Served], nginx_dir: Path) -> None:
    # Round robin over both replicas: the template's one upstream server line, given two.
    upstream = "; server ".join(f"127.0.0.1:{s.port}" for s in replicas)
    proxy = Nginx(nginx_dir, upstream, "127.0.0.1:9")
    proxy.start(rollout_percent=100)
    front = Served.__new__(Served)  # the same client helpers, pointed at nginx
    front.url = proxy.url
    try:
        rng = random.Random(11)
        for path in ("/v1/chat/completions", "/api/v1/ai/generate-content"):
            for round_ in range(3):
                for server in replicas:
                    server.api.openai.enqueue(Say(TEXT, word_delay_s=0.01))
                user = f"nginx-{path}-{round_}"
                body = {**ROUTES[path], ("user_id" if path.startswith("/api/") else "user"): user}
                got, resumes = await cut_and_resume([front], path, body, rng, 3)
                assert text_of(path, got) == TEXT
                assert seqs(got) == list(range(1, seqs(got)[-1] + 1))
                records = await both(replicas, user)
                assert [r["outcome"] for r in records] == ["success"]
                assert 0 < records[0]["resumes"] <= resumes  # those made while it generated
        generations = sum(len(s.api.openai.calls) for s in replicas)
        assert generations == 6
    finally:
        proxy.stop()
    assert "[crit]" not in proxy.error_log() and "[emerg]" not in proxy.error_log()
