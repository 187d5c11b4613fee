"""What the Serve graph adds in front of a hosted provider: the same request (a) straight to the fake
OpenAI server with the official SDK and (b) through HTTP -> ingress -> Router -> that same fake,
non-streamed and streamed, at concurrency 1 and 64, in one run.

    .venv/bin/python benchmarks/router_overhead.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
from benchmarks._serve import served  # noqa: E402

MESSAGES = [{"role": "user", "content": "Give me a one-line study tip."}]


def start_fake(kind: str, fail_rate: float = 0.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes", kind, str(port), str(fail_rate)],
                               cwd=ROOT)
    time.sleep(1.5)
    return process, f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(client, stream: bool, model: str = "gpt-4o-mini") -> float:
    start = time.perf_counter()
    if stream:
        async for _ in await client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=32, stream=True):
            pass
    else:
        await client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=32)
    return time.perf_counter() - start


async def load(base_url: str, concurrency: int, total: int, stream: bool,
               model: str = "gpt-4o-mini") -> tuple[list[float], float, int]:
    """(latencies of successful requests, requests/s, failures)."""
    import httpx
    from openai import AsyncOpenAI

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=60,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    opts = parser.parse_args()
    fake, fake_url = start_fake("openai")
    upstream = f"{fake_url}/v1"
    args = {"enable_local_models": False,
            "router": {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 512,
                       "providers": {"openai": {"base_url": upstream}}}}
    try:
        with served(args) as url:
            ingress = (os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" and "haproxy") or "python proxy"
            print(f"ingress: {ingress}; requests per cell: {opts.requests}")
            print("mode    conc  direct p50/p99 ms   served p50/p99 ms   added p50/p99 ms  thr ratio")
            for stream in (False, True):
                for concurrency in opts.concurrency:
                    total = opts.requests if concurrency == 1 else opts.requests * 3
                    d_lat, d_thr, _ = asyncio.run(load(upstream, concurrency, total, stream))
                    s_lat, s_thr, _ = asyncio.run(load(f"{url}/v1", concurrency, total, stream))
                    print(f"{'stream' if stream else 'json':7s} {concurrency:4d}  "
                          f"{pct(d_lat, 50):7.1f}/{pct(d_lat, 99):7.1f}   "
                          f"{pct(s_lat, 50):7.1f}/{pct(s_lat, 99):7.1f}   "
                          f"{pct(s_lat, 50) - pct(d_lat, 50):+7.1f}/{pct(s_lat, 99) - pct(d_lat, 99):+7.1f}"
                          f"   {s_thr / d_thr:.2f}x ({s_thr:.0f} vs {d_thr:.0f} req/s)")
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
