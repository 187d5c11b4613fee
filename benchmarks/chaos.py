"""Chaos: the app under steady load while its dependencies fail, one at a time.

Load: chat on the hosted fake (gpt-4o-mini) and on the local model, embeddings with the Redis vector
cache, every request recorded in a PostgreSQL ledger; rate limits in Redis. Scenarios, each with an
undisturbed phase, a fault of `--fault-s` seconds and a recovery phase: Redis killed, PostgreSQL
stopped, the local model's replica killed, the hosted fake hanging, and Redis paused (SIGSTOP, then
SIGCONT: connections stay open, nothing answers) under the load of users who have a budget, so
the budget store is out while their requests need it. Redis and PostgreSQL are the benchmark's own
instances (free ports, temporary directories), so stopping them disturbs nobody.

Per scenario: requests that failed (HTTP 5xx or no answer), p99 while faulted against the
undisturbed p99, ledger records lost (responses the client saw against the ledger's rows), and the
time to recover (from the fault's end until a 2 s window's p99 is back within 3x undisturbed).

    .venv/bin/python benchmarks/chaos.py [--fault-s 20] [--concurrency 6] [--only redis,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos")
from benchmarks._serve import served  # noqa: E402
from tests.fakes import FakeOpenAI, Fault  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

PG_BIN = next(Path("/usr/lib/postgresql").glob("*/bin"))


class Postgres:
    """A throwaway cluster owned by the postgres user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        shutil.chown(self.dir, "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres([PG_BIN / "initdb", "-D", self.dir / "data", "-A", "trust", "-U",
                           "postgres"])

    def _as_postgres(self, command: list[object]) -> None:
        subprocess.run(["su", "postgres", "-c", " ".join(str(c) for c in command)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self._as_postgres([PG_BIN / "pg_ctl", "-D", self.dir / "data", "-w", "-l",
                           self.dir / "log", "-o", f"'-p {self.port} -k {self.dir}'", "start"])

    def stop(self) -> None:
        self._as_postgres([PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop"])

    def count(self, prefix: str) -> int:
        import asyncpg

        async def run() -> int:
            conn = await asyncpg.connect(self.url)
            try:
                return int(await conn.fetchval(
                    "SELECT count(*) FROM usage_records WHERE user_id LIKE $1", f"{prefix}%"))
            finally:
                await conn.close()

        return asyncio.run(run())

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Outcome:
    started: float
    latency: float
    status: int  # 0: no HTTP answer


@dataclass
class Load:
    url: str
    prefix: str
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True

    async def run(self, concurrency: int) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            await asyncio.gather(*(self._worker(client, n) for n in range(concurrency)))

    async def _worker(self, client: object, n: int) -> None:
        kinds = ["hosted", "local", "embeddings"]
        turn = n
        while self.running:
            kind = kinds[turn % len(kinds)]
            turn += 1
            started = time.perf_counter()
            try:
                status = await self._one(client, kind, n)
            except Exception:
                status = 0
            self.outcomes.append(Outcome(started, time.perf_counter() - started, status))

    async def _one(self, client: object, kind: str, n: int) -> int:
        user = f"{self.prefix}{n}"
        headers = {"X-Request-Id": uuid.uuid4().hex}
        if kind == "embeddings":
            body: dict[str, object] = {"texts": [f"cell {n}", "the nucleus", f"a ribosome {n}"],
                                       "user_id": user}
            path = "/api/v1/ai/embeddings"
        else:
            model = "gpt-4o-mini" if kind == "hosted" else "smollm2-135m"
            body = {"model": model, "max_tokens": 8 if kind == "local" else 16, "user": user,
                    "messages": [{"role": "user", "content": "One study tip, please."}]}
            path = "/v1/chat/completions"
        response = await client.post(path, json=body, headers=headers)  # type: ignore[attr-defined]
        return int(response.status_code)


BUDGETED = "chaos-budgeted-"  # users with a budget (app_args): their load is one scenario's
MAX_CONCURRENCY = 64


@dataclass
class Scenario:
    name: str
    fault: Callable[[], None]
    heal: Callable[[], None]
    users: str | None = None  # the users' prefix, when not a fresh one of the scenario's own


def p99(latencies: list[float]) -> float:
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def recovery_s(outcomes: list[Outcome], healed: float, baseline_p99: float) -> float:
    """Seconds after `healed` until a 2 s window's p99 is within 3x the undisturbed p99."""
    start = healed
    while start < max((o.started for o in outcomes), default=healed):
        window = [o.latency for o in outcomes if start <= o.started < start + 2 and o.status]
        if window and p99(window) <= 3 * baseline_p99:
            return start - healed
        start += 0.5
    return float("nan")


async def run_scenario(url: str, scenario: Scenario, fault_s: float, concurrency: int,
                       db: Postgres) -> dict[str, object]:
    load = Load(url, scenario.users or f"chaos-{scenario.name}-{uuid.uuid4().hex[:6]}-")
    task = asyncio.create_task(load.run(concurrency))
    await asyncio.sleep(fault_s)
    faulted = time.perf_counter()
    await asyncio.to_thread(scenario.fault)
    await asyncio.sleep(fault_s)
    await asyncio.to_thread(scenario.heal)
    healed = time.perf_counter()
    await asyncio.sleep(fault_s)
    load.running = False
    await task
    undisturbed = [o.latency for o in load.outcomes if o.started < faulted and o.status]
    during = [o for o in load.outcomes if faulted <= o.started < healed]
    answered = [o for o in load.outcomes if o.status]
    await asyncio.sleep(8)  # the ledger writes in the background, and retries after an outage
    recorded = await asyncio.to_thread(db.count, load.prefix)
    return {
        "scenario": scenario.name, "requests": len(load.outcomes),
        "failed": sum(1 for o in load.outcomes if o.status == 0 or o.status >= 500),
        "p99_undisturbed_ms": round(p99(undisturbed) * 1000),
        "p99_faulted_ms": round(p99([o.latency for o in during if o.status]) * 1000),
        "lost_records": len(answered) - recorded,
        "recovery_s": round(recovery_s(load.outcomes, healed, p99(undisturbed)), 1),
    }


def kill_llm_replica() -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "LLMServer:smollm2-135m" in actor["name"] and "SERVE_REPLICA" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)


def scenarios(redis: RedisServer, db: Postgres, fake: FakeOpenAI) -> list[Scenario]:
    def hang() -> None:
        fake.enqueue(*[Fault(delay_s=3600)] * 100_000)

    return [
        Scenario("redis", redis.kill, redis.start),
        Scenario("postgres", db.stop, db.start),
        Scenario("replica", kill_llm_replica, lambda: None),
        Scenario("hosted-hang", hang, fake.script.clear),
        Scenario("redis-paused-budgets", redis.pause, redis.resume, users=BUDGETED),
    ]


@contextlib.contextmanager
def dependencies() -> Iterator[tuple[RedisServer, Postgres, FakeOpenAI]]:
    redis, db, fake = RedisServer(), Postgres(), FakeOpenAI()
    redis.start()
    db.start()
    fake.start()
    try:
        yield redis, db, fake
    finally:
        fake.stop()
        redis.stop()
        db.remove()


def app_args(redis: RedisServer, db: Postgres, fake: FakeOpenAI) -> dict[str, object]:
    return {
        "local_models": [{"name": "smollm2-135m", "ray_actor_options": {"num_cpus": 1},
                          "llama_cpp": {"n_ctx": 2048, "n_threads": 1}}],
        "router": {"providers": {"openai": {"base_url": f"{fake.url}/v1"}},
                   "first_token_timeout_s": 5},
        "embedder": {"n_threads": 1, "cache": {"type": "redis", "redis_url": redis.url}},
        "redis_url": redis.url,
        "ledger": {"database_url": db.url},
        "budgets": {"users": {f"{BUDGETED}{n}": {"daily_usd": 100.0}
                              for n in range(MAX_CONCURRENCY)}},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault-s", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    opts = parser.parse_args()
    assert opts.concurrency <= MAX_CONCURRENCY, f"at most {MAX_CONCURRENCY} (budgeted users)"
    with dependencies() as (redis, db, fake), served(app_args(redis, db, fake)) as url:
        chosen = [s for s in scenarios(redis, db, fake)
                  if not opts.only or s.name in opts.only.split(",")]
        rows = [asyncio.run(run_scenario(url, s, opts.fault_s, opts.concurrency, db))
                for s in chosen]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print("median failed per scenario:", statistics.median(int(str(r["failed"])) for r in rows))


if __name__ == "__main__":
    main()
