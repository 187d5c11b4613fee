"""Run a fake provider on its own (for benchmarks):

    python -m tests.fakes openai|anthropic PORT [FAIL_RATE]"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette

from tests.fakes import FakeAnthropic, FakeOpenAI

if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    fake = {"openai": FakeOpenAI, "anthropic": FakeAnthropic}[kind]()
    fake.fail_rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    uvicorn.run(Starlette(routes=fake.routes()), host="127.0.0.1", port=port, log_level="warning",
                lifespan="off")
