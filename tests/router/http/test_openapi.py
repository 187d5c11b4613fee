"""The published API tells the truth. It is snapshotted in docs/openapi.json, so a change to it is a
visible diff (after an intended change: `.venv/bin/python -m router.http.api > docs/openapi.json`), and
schemathesis' CLI, run as a peer would with every check, finds nothing it misstates."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from router.http.api import build_api, openapi_document
from tests.conftest import free_port
from tests.fakes import FakeOpenAI
from tests.fakes.catalog import MODELS
from tests.fakes.inprocess import ADMIN_KEY, EngineProvider, config, start
from tests.fakes.scripted import FakeEngine

ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT = ROOT / "docs" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_the_openapi_document_matches_its_snapshot() -> None:
    assert openapi_document() == json.loads(SNAPSHOT.read_text()), (
        "the public API changed: review the diff of `.venv/bin/python -m router.http.api` "
        "against docs/openapi.json, then write the new snapshot")


def like_the_fake_engine(provider: str) -> EngineProvider:
    """A hosted provider whose models answer as the fake engine does (JSON that fits a requested
    schema), so that no 5xx comes from a fake unable to write a quiz."""
    return EngineProvider({c.name: FakeEngine() for c in MODELS
                           if c.provider == provider and c.kind == "chat"}, name=provider)


async def test_schemathesis_with_every_check_finds_nothing(tmp_path: Any,
                                                           fake_openai: FakeOpenAI) -> None:
    """`schemathesis run <url>/openapi.json --checks all`, bounded examples, against the whole API
    in process (auth on: an admin key, so every route is reachable), its cross-field rules taught
    by tests/router/http/schemathesis_hooks.py."""
    embeddings = {"openai": {"base_url": f"{fake_openai.url}/v1"}}
    running = start(config(tmp_path, router={"providers": embeddings}), providers={
        "openai": like_the_fake_engine("openai"), "anthropic": like_the_fake_engine("anthropic")})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(running.services), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off",
                                           ws="none"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        cli = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
            "--max-examples", "15", "--header", f"Authorization: Bearer {ADMIN_KEY}",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT),
                 "SCHEMATHESIS_HOOKS": "tests.router.http.schemathesis_hooks"})
        output, _ = await asyncio.wait_for(cli.communicate(), timeout=300)
    finally:
        server.should_exit = True
        await serving
        await running.close()
    assert cli.returncode == 0, output.decode()[-8000:]
