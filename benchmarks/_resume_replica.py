"""One router replica for benchmarks/resume.py, in a process of its own: the API built as the
in-process tests build it (tests/fakes/inprocess.py), its hosted model scripted to stream a fixed
answer a word at a time, served by uvicorn on loopback, its runs mirrored in the given Redis.

    python benchmarks/_resume_replica.py PORT REDIS_URL LEDGER_DIR WORDS WORD_DELAY_S GRACE_S on|off

`off`: router.resume.enabled false (streams as before runs: the overhead's baseline).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from router.http.api import build_api
from tests.fakes.inprocess import config, start
from tests.fakes.scripted import Say


def answer(words: int) -> str:
    return " ".join(f"w{n}" for n in range(words))


async def main(port: int, redis_url: str, ledger: str, words: int, delay: float,
               grace: float, enabled: bool) -> None:
    api = start(config(Path(ledger), redis_url=redis_url, artifacts={"enabled": False},
                       router={"resume": {"grace_s": grace, "enabled": enabled},
                               "max_ongoing_requests": 1024, "request_timeout_s": 120,
                               "first_token_timeout_s": 60, "idle_timeout_s": 60},
                       rate_limits={"key_requests_per_minute": None,
                                    "key_tokens_per_minute": None}))
    api.openai.default = Say(answer(words), word_delay_s=delay)
    server = uvicorn.Server(uvicorn.Config(build_api(api.services), host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning",
                                           backlog=4096, timeout_graceful_shutdown=2))
    try:
        await server.serve()
    finally:
        await api.close()


if __name__ == "__main__":
    port, redis_url, ledger, words, delay, grace, enabled = sys.argv[1:8]
    asyncio.run(main(int(port), redis_url, ledger, int(words), float(delay), float(grace),
                     enabled == "on"))
