"""The hosted hot path, side by side in one run: the official `openai` SDK calling (a) the upstream
directly, (b) this service (the embedded default's accounting: the usage ledger on, no user id),
and (c) LiteLLM's proxy (one worker, no database) when it is installed, against the same
OpenAI-compatible upstream that spends 5 ms per token streamed or not (benchmarks/_upstream.py).

Rows: non-streamed p50/p99 at concurrency 1, throughput at concurrency 32, a stream's time to first
token and total at concurrency 1, and the CPU each gateway process spent per request (from /proc)
at concurrency 32, streamed and not. Targets are interleaved round by round.

    .venv/bin/python benchmarks/hot_path.py [--requests 300] [--litellm /work/litellm-venv]
                                            [--floor] [--traced] [--profile DIR]

LiteLLM: `python3 -m venv V && V/bin/pip install 'litellm[proxy]'` (kept out of this project).
--floor adds a bare Ray Serve pass-through on the same ingress (benchmarks/_passthrough.py): what
the framework alone costs. --traced adds the same app with tracing on (every request sampled,
exported over OTLP/HTTP to a receiver in this process, tests/fakes/otlp.py): what traces cost the
Router. --profile writes py-spy flame graphs of the Router replica under load
(json and stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
from benchmarks._serve import served  # noqa: E402
from tests.fakes.otlp import OtlpReceiver  # noqa: E402
from tests.ports import free_port, wait_for_port  # noqa: E402

MESSAGES = [{"role": "user", "content": "Give me a one-line study tip."}]
TOKENS = 12
TICKS = os.sysconf("SC_CLK_TCK")
LITELLM_KEY = "sk-" + "5eed" * 16  # its proxy refuses to start without a strong master key


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    requests: int = 0
    failures: int = 0

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.first_tokens += other.first_tokens
        self.elapsed += other.elapsed
        self.requests += other.requests
        self.failures += other.failures


async def one(client: object, stream: bool, sample: Sample) -> None:
    start = time.perf_counter()
    create = client.chat.completions.create  # type: ignore[attr-defined]
    if stream:
        first = None
        async for chunk in await create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=TOKENS,
                                        stream=True):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        sample.first_tokens.append(first or 0.0)
    else:
        await create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=TOKENS)
    sample.latencies.append(time.perf_counter() - start)


async def load(base_url: str, concurrency: int, total: int, stream: bool,
               api_key: str = "sk-bench") -> Sample:
    import httpx
    from openai import AsyncOpenAI

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60,
                         http_client=httpx.AsyncClient(limits=limits))
    sample, queue = Sample(), iter(range(total))
    for _ in range(min(concurrency, 8)):  # warm connections
        with contextlib.suppress(Exception):
            await one(client, stream, Sample())

    async def worker() -> None:
        for _ in queue:
            try:
                await one(client, stream, sample)
            except Exception:
                sample.failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.elapsed, sample.requests = time.perf_counter() - start, total
    await client.close()
    return sample


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def replica_pids(app: str, deployment: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"ServeReplica:{app}:{deployment}"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def floor(url: str, upstream: str) -> Target:
    """The pass-through (benchmarks/_passthrough.py) on the same Serve, at /floor."""
    from ray import serve

    from benchmarks._passthrough import PassThrough

    serve.run(PassThrough.bind(upstream), name="floor", route_prefix="/floor")
    return Target("floor", f"{url}/floor/v1", replica_pids("floor", "PassThrough"))


@contextlib.contextmanager
def process(command: list[str], port: int, env: dict[str, str] | None = None,
            wait_s: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, wait_s)
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        proc.kill()


@contextlib.contextmanager
def litellm(venv: Path, upstream: str) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
        f"      model: openai/gpt-4o-mini\n      api_base: {upstream}\n      api_key: sk-bench\n")
    command = [str(venv / "bin" / "litellm"), "--config", str(config), "--port", str(port),
               "--num_workers", "1"]
    env = {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    with process(command, port, env, wait_s=180) as proc:
        yield f"http://127.0.0.1:{port}", [proc.pid]


def app_args(upstream: str, replicas: int = 1) -> dict[str, object]:
    """The embedded default's accounting (auth off on loopback, the SQLite ledger, key rate
    limits) on the hosted path only."""
    return {"enable_local_models": False, "embedder": {"enabled": False},
            "router": {"max_ongoing_requests": 512, "num_replicas": replicas,
                       "providers": {"openai": {"base_url": upstream}}},
            "ledger": {"database_url": "sqlite:///var/bench-hot-path.db"}}


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]
    api_key: str = "sk-bench"


def measure(targets: list[Target], stream: bool, concurrency: int, total: int,
            rounds: int) -> dict[str, tuple[Sample, float]]:
    """Each target's sample and CPU seconds per request, round-robin over `rounds` rounds."""
    found = {t.name: (Sample(), 0.0) for t in targets}
    for _ in range(rounds):
        for target in targets:
            before = cpu_seconds(target.pids)
            sample = asyncio.run(load(target.url, concurrency, total // rounds, stream,
                                      target.api_key))
            spent = cpu_seconds(target.pids) - before
            merged, cpu = found[target.name]
            merged.add(sample)
            found[target.name] = (merged, cpu + spent)
    return {name: (s, cpu / max(1, s.requests)) for name, (s, cpu) in found.items()}


def ms(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def report(targets: list[Target], opts: argparse.Namespace) -> None:
    names = [t.name for t in targets]
    rows: list[str] = []
    solo = measure(targets, False, 1, opts.requests, 3)
    for name in names:
        s, _ = solo[name]
        rows.append(f"json c1     {name:8s} p50 {ms(s.latencies, 50):6.1f}  p99 "
                    f"{ms(s.latencies, 99):6.1f} ms")
    streams = measure(targets, True, 1, opts.requests, 3)
    for name in names:
        s, _ = streams[name]
        rows.append(f"stream c1   {name:8s} ttft p50 {ms(s.first_tokens, 50):6.1f}  total p50 "
                    f"{ms(s.latencies, 50):6.1f}  p99 {ms(s.latencies, 99):6.1f} ms")
    for stream in (False, True):
        busy = measure(targets, stream, 32, opts.requests * 3, 3)
        direct = busy["direct"][0].requests / busy["direct"][0].elapsed
        for name in names:
            s, cpu = busy[name]
            rate = s.requests / s.elapsed
            rows.append(f"{'stream' if stream else 'json':6s} c32  {name:8s} {rate:6.1f} req/s "
                        f"({rate / direct:.2f}x direct)  CPU {cpu * 1000:5.1f} ms/request"
                        + (f"  {s.failures} failed" if s.failures else ""))
    print("\n".join(rows))


def profile(router: list[int], url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stream in (False, True):
        name = out / f"router-{'stream' if stream else 'json'}.txt"  # collapsed stacks
        spy = subprocess.Popen([str(ROOT / ".venv/bin/py-spy"), "record", "-o", str(name),
                                "-f", "raw", "-p", str(router[0]), "-d", "15", "-r", "200",
                                "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        asyncio.run(load(url, 32, 3000, stream))
        spy.wait()
        print("profile:", name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--litellm", type=Path, default=Path("/work/litellm-venv"))
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--router-replicas", type=int, default=1)
    parser.add_argument("--floor", action="store_true",
                        help="also measure a bare Serve pass-through (the framework's floor)")
    parser.add_argument("--traced", action="store_true",
                        help="also measure the service with tracing on (every request sampled)")
    opts = parser.parse_args()
    port = free_port()
    upstream = f"http://127.0.0.1:{port}/v1"
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([sys.executable, "benchmarks/_upstream.py", str(port)], port))
        more = {}
        if opts.traced:
            receiver = OtlpReceiver().start()
            stack.callback(receiver.stop)
            more["/traced"] = {**app_args(upstream, opts.router_replicas),
                               "tracing": {"enabled": True, "otlp_endpoint": receiver.url},
                               "ledger": {"database_url": "sqlite:///var/bench-hot-path-traced.db"}}
        url = stack.enter_context(served(app_args(upstream, opts.router_replicas), more))
        targets = [Target("direct", upstream, []),
                   Target("service", f"{url}/v1", replica_pids("learnx-0", "Router"))]
        if opts.traced:
            targets.append(Target("traced", f"{url}/traced/v1", replica_pids("learnx-1", "Router")))
        if opts.floor:
            targets.append(floor(url, upstream))
        if (opts.litellm / "bin" / "litellm").exists():
            lite_url, pids = stack.enter_context(litellm(opts.litellm, upstream))
            targets.append(Target("litellm", lite_url, pids, LITELLM_KEY))
        if opts.profile:
            profile(targets[1].pids, targets[1].url, opts.profile)
            return
        report(targets, opts)


if __name__ == "__main__":
    main()
