"""Fallback under a failing provider: 500 requests at concurrency 32 for gpt-4o-mini while the fake
OpenAI answers 30 % of requests with HTTP 503, the fake Anthropic being healthy; with fallback, and
without (retries only), against the healthy baseline, in one run.

    .venv/bin/python benchmarks/fallback.py [--requests 500] [--concurrency 32] [--fail-rate 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
from benchmarks._serve import served
from benchmarks.router_overhead import load, pct, start_fake


def scenario(label: str, fail_rate: float, fallback: bool, opts: argparse.Namespace) -> None:
    openai_fake, openai_url = start_fake("openai", fail_rate)
    anthropic_fake, anthropic_url = start_fake("anthropic")
    args = {"enable_local_models": False, "router": {
        "ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 512,
        "enable_fallback": fallback,
        "providers": {"openai": {"base_url": f"{openai_url}/v1"},
                      "anthropic": {"base_url": anthropic_url}}}}
    try:
        with served(args) as url:
            latencies, throughput, failures = asyncio.run(
                load(f"{url}/v1", opts.concurrency, opts.requests, stream=False))
    finally:
        for process in (openai_fake, anthropic_fake):
            process.terminate()
            process.wait()
    ok = len(latencies)
    print(f"{label:28s} success {ok / (ok + failures):7.1%}  p50 {pct(latencies, 50):7.1f} ms  "
          f"p99 {pct(latencies, 99):7.1f} ms  {throughput:5.0f} req/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fail-rate", type=float, default=0.3)
    opts = parser.parse_args()
    print(f"{opts.requests} requests, concurrency {opts.concurrency}, non-streamed, gpt-4o-mini")
    scenario("healthy", 0.0, True, opts)
    scenario(f"{opts.fail_rate:.0%} failing, fallback on", opts.fail_rate, True, opts)
    scenario(f"{opts.fail_rate:.0%} failing, fallback off", opts.fail_rate, False, opts)


if __name__ == "__main__":
    main()
