"""Embedding service, one run: the raw engine in process (the ceiling) vs the served graph with
batching vs with max_batch_size=1, at concurrency 32 with short texts; cache-hit vs cache-miss
latency for the memory and Redis caches, with and without the router's lookup before the Serve hop;
and the hit rate of a repeated workload.

    .venv/bin/python benchmarks/embeddings.py [--requests 640] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._serve import served
from deployments.embed.encoder import LlamaCppEncoder, embed_batch
from models import LOCAL_EMBEDDING_MODELS, resolve_embedding_gguf

WORDS = ["cell", "energy", "plant", "light", "water", "carbon", "sugar", "leaf", "root",
         "oxygen", "atom", "force", "mass", "speed"]


def short_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=8)) + f" #{seed}-{i}" for i in range(n)]


def raw_rate(threads: int, texts: list[str]) -> float:
    spec = LOCAL_EMBEDDING_MODELS[0]
    encoder = LlamaCppEncoder(spec, resolve_embedding_gguf(spec), n_threads=threads)
    embed_batch(encoder, texts[:32], 8)
    start = time.perf_counter()
    embed_batch(encoder, texts, 8)
    return len(texts) / (time.perf_counter() - start)


async def served_rate(url: str, texts: list[str], concurrency: int) -> float:
    queue = iter(texts)
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker() -> None:
            for text in queue:
                r = await c.post(f"{url}/api/v1/ai/embeddings", json={"texts": [text], "use_cache": False})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start)


def latency_ms(url: str, texts: list[str]) -> float:
    times = []
    with httpx.Client(timeout=60) as client:
        for text in texts:
            start = time.perf_counter()
            client.post(f"{url}/api/v1/ai/embeddings", json={"texts": [text]}).raise_for_status()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def hit_rate(url: str) -> float:
    """A course of 200 chunks; 20 learners each embed a random 50 of them."""
    course = short_texts(200, seed=99)
    rng = random.Random(5)
    hits = total = 0
    with httpx.Client(timeout=60) as client:
        for _ in range(20):
            body = client.post(f"{url}/api/v1/ai/embeddings",
                               json={"texts": rng.sample(course, 50)}).json()
            hits += body["cache_hits"]
            total += body["count"]
    return hits / total


def app_args(threads: int, batch: int, cache: dict) -> dict:
    return {"local_models": [], "router": {"ray_actor_options": {"num_cpus": 0.25}},
            "embedder": {"n_threads": threads, "ray_actor_options": {"num_cpus": 1},
                         "batching": {"max_batch_size": batch, "batch_wait_timeout_s": 0.005},
                         "cache": cache}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    opts = parser.parse_args()
    texts = short_texts(opts.requests, seed=1)
    raw = raw_rate(opts.threads, texts)
    print(f"raw engine in process      {raw:7.0f} embeddings/s (chunks of 8, {opts.threads} thread)")
    rates = {}
    for batch in (64, 1):
        with served(app_args(opts.threads, batch, {"enabled": False})) as url:
            rates[batch] = asyncio.run(served_rate(url, short_texts(opts.requests, seed=batch), 32))
        print(f"served, max_batch_size={batch:<3d} {rates[batch]:7.0f} embeddings/s "
              f"({rates[batch] / raw:.2f}x raw)")
    print(f"batching vs unbatched: {rates[64] / rates[1]:.2f}x")
    redis = {"type": "redis", "redis_url": opts.redis_url}
    for kind, cache in (("memory", {"type": "memory"}),
                        ("memory, no router lookup", {"type": "memory", "router_lookup": False}),
                        ("redis", {**redis, "key_prefix": f"learnx-bench-{time.time_ns()}:"}),
                        ("redis, no router lookup", {**redis, "router_lookup": False,
                                                     "key_prefix": f"lx-bench-{time.time_ns()}:"})):
        with served(app_args(opts.threads, 64, cache)) as url:
            miss = latency_ms(url, short_texts(100, seed=hash(kind) % 1000))
            hit_text = short_texts(1, seed=7)
            latency_ms(url, hit_text)
            hit = latency_ms(url, hit_text * 100)
            rate = hit_rate(url) if kind == "memory" else None
        print(f"{kind:24s} cache: miss p50 {miss:6.2f} ms, hit p50 {hit:6.2f} ms, "
              f"miss/hit {miss / hit:.2f}x" + (f"; repeated-course hit rate {rate:.1%}" if rate else ""))


if __name__ == "__main__":
    main()
