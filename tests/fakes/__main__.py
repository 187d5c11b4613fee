"""Run a fake provider on its own: `python -m tests.fakes openai|anthropic PORT` (for benchmarks)."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette

from tests.fakes import FakeAnthropic, FakeOpenAI

if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    fake = {"openai": FakeOpenAI, "anthropic": FakeAnthropic}[kind]()
    uvicorn.run(Starlette(routes=fake.routes()), host="127.0.0.1", port=port, log_level="warning",
                lifespan="off")
