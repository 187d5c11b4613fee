"""Streams cut at random points under load, resumed on either of two router replicas (issue 25).

Two router replicas, each a process of its own (benchmarks/_resume_replica.py: the API as the
in-process tests build it, its hosted model scripted to stream a fixed answer a word at a time),
share the benchmark's own Redis. `--streams` streams (chat completions and generate-content,
alternately) run `--concurrency` at a time; each is cut 1-3 times at a random event (the client
drops its connection) and sent again with Last-Event-ID to a replica chosen at random. Prints: the
streams completed whole (text equal to the answer, ending with its terminal event), events lost
and repeated, reconnect-to-first-replayed-event p50/p95 (same replica, other replica), ledger
records and resumes, and the peaks of each replica's memory (RSS) and of Redis (used_memory, keys)
against their bounds.

    .venv/bin/python benchmarks/resume.py [--streams 1000] [--concurrency 100] [--words 80]
    .venv/bin/python benchmarks/resume.py --overhead [--streams 300]

With --overhead, no cuts: the same streams through replicas with runs off (router.resume.enabled
false: streams as before) and on (kept and mirrored in Redis), side by side; prints the replicas'
CPU per stream (user + system, from /proc) and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._resume_replica import answer  # noqa: E402
from core.config import ResumeConfig  # noqa: E402
from tests.fakes.inprocess import KEY  # noqa: E402
from tests.ports import free_port, wait_for_port  # noqa: E402

CUTS = True  # --overhead: none
PATHS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "stream": True,
                             "messages": [{"role": "user", "content": "Tell the lesson"}]},
    "/api/v1/ai/generate-content": {"content": "Photosynthesis: plants make sugar from light.",
                                    "content_type": "summary", "model": "gpt-4o-mini"},
}


@dataclass
class Outcome:
    complete: bool = False
    lost: int = 0
    repeated: int = 0
    reconnects: int = 0
    same_ms: list[float] = field(default_factory=list)  # reconnect -> first replayed event
    other_ms: list[float] = field(default_factory=list)
    failure: str = ""


def text_of(path: str, data: dict[str, Any]) -> str:
    if path == "/v1/chat/completions":
        choices = data.get("choices") or [{}]
        return str(choices[0].get("delta", {}).get("content") or "")
    return str(data["content"]) if data.get("type") == "summary" else ""


async def one(http: httpx.AsyncClient, number: int, urls: list[str], words: int,
              rng: random.Random) -> Outcome:
    path = list(PATHS)[number % 2]
    body = {**PATHS[path], ("user_id" if path.startswith("/api/") else "user"): f"bench-{number}"}
    out, seqs, text = Outcome(), list[int](), list[str]()
    cuts = [rng.randint(1, words) for _ in range(rng.randint(1, 3))] if CUTS else []
    last: str | None = None
    previous: str | None = None
    while True:
        url = rng.choice(urls)
        headers = {"X-API-Key": KEY, **({"Last-Event-ID": last} if last else {})}
        cut = cuts.pop(0) if cuts else None
        sent = time.perf_counter()
        got = 0
        async with http.stream("POST", url + path, json=body, headers=headers) as response:
            if response.status_code != 200:
                out.failure = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return out
            pending = ""
            async for chunk in response.aiter_text():
                pending += chunk
                *blocks, pending = pending.split("\n\n")
                for block in blocks:
                    fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                    if got == 0 and last is not None:
                        (out.same_ms if url == previous else out.other_ms).append(
                            (time.perf_counter() - sent) * 1000)
                    got += 1
                    if "id" in fields:
                        seqs.append(int(fields["id"].rsplit(":", 1)[1]))
                        last = fields["id"]
                    if fields["data"] == "[DONE]":
                        return finish(out, seqs, "".join(text), words)
                    text.append(text_of(path, json.loads(fields["data"])))
                    if cut is not None and got >= cut:
                        break
                else:
                    continue
                break
        previous = url
        out.reconnects += 1


def finish(out: Outcome, seqs: list[int], text: str, words: int) -> Outcome:
    unique = set(seqs)
    out.repeated = len(seqs) - len(unique)
    out.lost = max(unique, default=0) - len(unique)
    out.complete = text == answer(words) and out.lost == 0 and out.repeated == 0
    if text != answer(words):
        out.failure = "text differs"
    return out


async def sample(pids: list[int], redis_url: str, peaks: dict[str, float],
                 stop: asyncio.Event) -> None:
    client = aioredis.from_url(redis_url)
    while not stop.is_set():
        info = await client.info("memory")
        peaks["redis_bytes"] = max(peaks.get("redis_bytes", 0), info["used_memory"])
        peaks["redis_keys"] = max(peaks.get("redis_keys", 0), await client.dbsize())
        for n, pid in enumerate(pids):
            rss = rss_kb(pid)
            peaks[f"rss_{n}"] = max(peaks.get(f"rss_{n}", 0), rss)
        await asyncio.sleep(0.25)
    await client.aclose()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def load(args: argparse.Namespace, urls: list[str], pids: list[int],
               redis_url: str) -> tuple[list[Outcome], dict[str, float], float]:
    rng = random.Random(args.seed)
    gate = asyncio.Semaphore(args.concurrency)
    peaks: dict[str, float] = {f"rss_{n}_start": rss_kb(pid) for n, pid in enumerate(pids)}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(pids, redis_url, peaks, stop))

    limits = httpx.Limits(max_connections=4 * args.concurrency,
                          max_keepalive_connections=2 * args.concurrency)
    http = httpx.AsyncClient(timeout=60, limits=limits)

    async def bounded(number: int) -> Outcome:
        async with gate:
            try:
                return await one(http, number, urls, args.words, random.Random(rng.random()))
            except Exception as error:  # a failure is counted, not fatal to the benchmark
                return Outcome(failure=f"{type(error).__name__}: {error}")
    started = time.perf_counter()
    cpu = {pid: cpu_s(pid) for pid in pids} | {0: time.process_time()}
    outcomes = await asyncio.gather(*(bounded(n) for n in range(args.streams)))
    peaks["cpu_replicas"] = sum(cpu_s(pid) - cpu[pid] for pid in pids)
    peaks["cpu_client"] = time.process_time() - cpu[0]
    await http.aclose()
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    return outcomes, peaks, elapsed


def ledger(dirs: list[Path]) -> tuple[int, int, dict[str, int]]:
    records, resumes, outcomes = 0, 0, dict[str, int]()
    for directory in dirs:
        with sqlite3.connect(directory / "usage.db") as db:
            for outcome, count, total in db.execute(
                    "SELECT outcome, COUNT(*), SUM(resumes) FROM usage_records GROUP BY outcome"):
                outcomes[outcome] = outcomes.get(outcome, 0) + count
                records += count
                resumes += total or 0
    return records, resumes, outcomes


def p(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def report(args: argparse.Namespace, outcomes: list[Outcome], peaks: dict[str, float],
           elapsed: float, dirs: list[Path]) -> None:
    complete = sum(o.complete for o in outcomes)
    same = [ms for o in outcomes for ms in o.same_ms]
    other = [ms for o in outcomes for ms in o.other_ms]
    both = same + other
    records, resumes, by_outcome = ledger(dirs)
    bounds = ResumeConfig(grace_s=args.grace)
    print(f"\n{args.streams} streams, concurrency {args.concurrency}, {args.words} words at "
          f"{args.word_delay * 1000:.0f} ms each, in {elapsed:.1f} s")
    print("| streams complete | events lost | events repeated | reconnects | reconnect -> first "
          "replayed event p50 / p95 ms (same replica; other) | ledger records | resumes recorded |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {complete}/{len(outcomes)} ({100 * complete / len(outcomes):.1f} %) | "
          f"{sum(o.lost for o in outcomes)} | {sum(o.repeated for o in outcomes)} | "
          f"{sum(o.reconnects for o in outcomes)} | {p(both, 50):.1f} / **{p(both, 95):.1f}** "
          f"({p(same, 95):.1f}; {p(other, 95):.1f}) | {records} {by_outcome} | {resumes} |")
    for n in range(2):
        print(f"replica {n}: RSS {peaks[f'rss_{n}_start'] / 1024:.0f} MiB at start, peak "
              f"{peaks[f'rss_{n}'] / 1024:.0f} MiB")
    print(f"CPU: replicas {peaks['cpu_replicas']:.1f} s, this client {peaks['cpu_client']:.1f} s, "
          f"in {elapsed:.1f} s on {os.cpu_count()} cores")
    print(f"Redis: used_memory peak {peaks['redis_bytes'] / 2**20:.1f} MiB, keys peak "
          f"{peaks['redis_keys']:.0f}")
    print(f"bounds: per run {bounds.max_events} events / {bounds.max_bytes} bytes; per replica "
          f"{bounds.max_runs} ended runs kept (<= {bounds.max_runs * bounds.max_bytes / 2**20:.0f} "
          f"MiB of events) plus the live ones; Redis: each run's stream and meta expire "
          f"{bounds.keep_s:g} s / {2 * bounds.keep_s:g} s after its last write")
    failures = [o.failure for o in outcomes if o.failure]
    if failures:
        print(f"failures ({len(failures)}):", *sorted(set(failures))[:10], sep="\n  ")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Replicas:
    """The benchmark's Redis and two router replicas, each a process of its own."""

    def __init__(self, args: argparse.Namespace, enabled: bool = True):
        self.work = Path(tempfile.mkdtemp(prefix="resume-bench-"))
        port = free_port()
        self.redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        wait_for_port(port)
        self.processes, self.urls, self.dirs = [], [], []
        for n in range(2):
            port = free_port()
            (self.work / str(n)).mkdir()
            self.dirs.append(self.work / str(n))
            self.processes.append(subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "_resume_replica.py"), str(port),
                 self.redis_url, str(self.work / str(n)), str(args.words), str(args.word_delay),
                 str(args.grace), "on" if enabled else "off"]))
            self.urls.append(f"http://127.0.0.1:{port}")
            wait_for_port(port, timeout_s=60)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for process in [*self.processes, self.redis]:
            process.terminate()
            process.wait(timeout=10)


def overhead(args: argparse.Namespace) -> None:
    global CUTS
    CUTS = False
    per_stream = {}
    for enabled in (False, True):
        replicas = Replicas(args, enabled)
        try:
            before = sum(cpu_s(pid) for pid in replicas.pids)
            outcomes, _, elapsed = asyncio.run(
                load(args, replicas.urls, replicas.pids, replicas.redis_url))
            used = sum(cpu_s(pid) for pid in replicas.pids) - before
        finally:
            replicas.stop()
        complete = sum(o.complete for o in outcomes)
        per_stream[enabled] = used / len(outcomes) * 1000
        print(f"runs {'on ' if enabled else 'off'}: {complete}/{len(outcomes)} complete in "
              f"{elapsed:.1f} s, replicas' CPU {used:.1f} s, {per_stream[enabled]:.2f} ms per "
              f"stream of {args.words + 3}+ events")
    print(f"| runs off ms CPU/stream | runs on | ratio |\n|---|---|---|\n"
          f"| {per_stream[False]:.2f} | {per_stream[True]:.2f} | "
          f"{per_stream[True] / per_stream[False]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--words", type=int, default=80)
    parser.add_argument("--word-delay", type=float, default=0.025)  # 40 tokens/s
    parser.add_argument("--grace", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--overhead", action="store_true")
    args = parser.parse_args()
    if args.overhead:
        overhead(args)
        return
    replicas = Replicas(args)
    try:
        outcomes, peaks, elapsed = asyncio.run(
            load(args, replicas.urls, replicas.pids, replicas.redis_url))
        time.sleep(1.0)  # the last records are written in the background
        report(args, outcomes, peaks, elapsed, replicas.dirs)
    finally:
        replicas.stop()


if __name__ == "__main__":
    main()
