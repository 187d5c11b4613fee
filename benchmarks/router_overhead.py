"""What the Serve graph adds in front of a hosted provider: the same request (a) straight to the fake
OpenAI server with the official SDK and (b) through HTTP -> ingress -> Router -> that same fake,
non-streamed and streamed, at concurrency 1 and 64, in one run. (b) is served twice side by side:
with the usage accounting a production deployment runs (API key check, rate limits, a budget for
the user, the usage ledger) and bare (all of it off), so the cost of accounting is a difference.

    .venv/bin/python benchmarks/router_overhead.py [--requests 200] [--shared-state]

--shared-state keeps budgets and rate limits in Redis (REDIS_URL, default 127.0.0.1:6379) and the
ledger in PostgreSQL (DATABASE_URL, default 127.0.0.1:5432/test) instead of the replica and SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
from benchmarks._serve import served  # noqa: E402
from router.http.auth import hash_key  # noqa: E402
from tests.ports import free_port  # noqa: E402

BENCH_KEY = "sk-bench"  # the fake ignores it; the accounted app admits it

MESSAGES = [{"role": "user", "content": "Give me a one-line study tip."}]


def start_fake(kind: str, fail_rate: float = 0.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes", kind, str(port), str(fail_rate)],
                               cwd=ROOT)
    time.sleep(1.5)
    return process, f"http://127.0.0.1:{port}"


async def one(client, stream: bool, model: str = "gpt-4o-mini") -> float:
    start = time.perf_counter()
    if stream:
        async for _ in await client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=32, stream=True, user="bench-user"):
            pass
    else:
        await client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=32,
                                             user="bench-user")
    return time.perf_counter() - start


async def load(base_url: str, concurrency: int, total: int, stream: bool,
               model: str = "gpt-4o-mini") -> tuple[list[float], float, int]:
    """(latencies of successful requests, requests/s, failures)."""
    import httpx
    from openai import AsyncOpenAI

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = AsyncOpenAI(base_url=base_url, api_key=BENCH_KEY, max_retries=0, timeout=60,
                         http_client=httpx.AsyncClient(limits=limits))
    latencies: list[float] = []
    failures = 0
    queue = iter(range(total))

    async def worker() -> None:
        nonlocal failures
        for _ in queue:
            try:
                latencies.append(await one(client, stream, model))
            except Exception:
                failures += 1

    for _ in range(min(20, total)):  # warm connections
        with contextlib.suppress(Exception):
            await one(client, stream, model)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return latencies, total / elapsed, failures


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def app_args(upstream: str, accounting: bool, shared: bool) -> dict:
    args = {"enable_local_models": False, "embedder": {"enabled": False},
            "router": {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 512,
                       "providers": {"openai": {"base_url": upstream}}}}
    if not accounting:
        off = dict.fromkeys(("user_requests_per_minute", "user_tokens_per_minute",
                             "key_requests_per_minute", "key_tokens_per_minute"))
        return {**args, "auth": {"enabled": False}, "rate_limits": off, "ledger": {"enabled": False}}
    args |= {"auth": {"api_keys": [{"id": "bench", "sha256": hash_key(BENCH_KEY)}]},
             "rate_limits": {"user_requests_per_minute": 10**9, "user_tokens_per_minute": 10**12,
                             "key_requests_per_minute": 10**9, "key_tokens_per_minute": 10**12},
             "budgets": {"users": {"bench-user": {"daily_usd": 10**6}}}}
    if shared:
        args |= {"redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                 "ledger": {"database_url": os.environ.get("DATABASE_URL",
                                                           "postgresql://127.0.0.1:5432/test")}}
    else:
        args["ledger"] = {"database_url": "sqlite:///var/bench-usage.db"}
    return args


def row(mode: str, concurrency: int, base: tuple[list[float], float, int],
        served_: tuple[list[float], float, int]) -> str:
    (d_lat, d_thr, _), (s_lat, s_thr, failed) = base, served_
    return (f"{mode:14s} {concurrency:4d}  {pct(d_lat, 50):7.1f}/{pct(d_lat, 99):7.1f}   "
            f"{pct(s_lat, 50):7.1f}/{pct(s_lat, 99):7.1f}   "
            f"{pct(s_lat, 50) - pct(d_lat, 50):+7.1f}/{pct(s_lat, 99) - pct(d_lat, 99):+7.1f}"
            f"   {s_thr / d_thr:.2f}x ({s_thr:.0f} vs {d_thr:.0f} req/s)"
            + (f" {failed} failed" if failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--shared-state", action="store_true")
    opts = parser.parse_args()
    fake, fake_url = start_fake("openai")
    upstream = f"{fake_url}/v1"
    try:
        with served(app_args(upstream, True, opts.shared_state),
                    {"/bare": app_args(upstream, False, False)}) as url:
            ingress = (os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" and "haproxy") or "python proxy"
            state = "Redis + PostgreSQL" if opts.shared_state else "per replica + SQLite"
            print(f"ingress: {ingress}; accounting state: {state}; requests per cell: {opts.requests}")
            print("mode           conc  direct p50/p99 ms   served p50/p99 ms   added p50/p99 ms  thr ratio")
            for stream in (False, True):
                for concurrency in opts.concurrency:
                    total = opts.requests if concurrency == 1 else opts.requests * 3
                    direct = asyncio.run(load(upstream, concurrency, total, stream))
                    bare = asyncio.run(load(f"{url}/bare/v1", concurrency, total, stream))
                    accounted = asyncio.run(load(f"{url}/v1", concurrency, total, stream))
                    mode = "stream" if stream else "json"
                    print(row(f"{mode} bare", concurrency, direct, bare))
                    print(row(f"{mode} accounted", concurrency, direct, accounted))
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
