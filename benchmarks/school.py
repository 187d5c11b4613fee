"""A school at once (issue 23): classes of learners on the embedded default (configs/serve.yaml as
shipped: SmolLM2 on llama.cpp, 8 slots) plus a hosted fake (OpenAI's wire format), mixed tiers and
content types. Four measurements, each side by side in one run:

1. Fair share. One class sends a burst (3x its learners' requests, first); the other classes' learners
   follow at once; everything on the local model at the interactive tier. Each class's share of the
   answer tokens started while every class had requests waiting: max/min and Jain's index, with the
   classes told apart (one school key, each class's requests naming their `group`: the engine's
   group is the tenant's class) and not (no group named: the whole school one group, first come
   first served).
2. Assessment time to first token. Exam questions one at a time on an idle replica, then while
   background requests keep its slots and queue full: p50/p95 and the ratio; with no slot kept for
   exams (assessment_slots 0, prefill_chunk n_batch) and with `--reserve` slots kept and `--chunk`
   prompt tokens per step for the other tiers. The two variants are two apps of one Ray, served
   side by side and measured in turns (`--rounds`, the order alternating), with the fair share and
   one interactive class alone (its answer tokens/s: what the kept slot and the chunked prefill
   cost the other tiers), so that the shared box's other work weighs on both alike.
3. Each validated artifact once per class. 30 identical quiz requests of one class on the hosted
   fake, arriving within `--spread` seconds: generations, replays, schema-valid answers and what they
   cost; against 30 learners of 30 different schools asking the same (nothing to share).
4. A class's budget (hosted fake): a group budget worth about 10 requests' estimates, each learner
   capped at 4, every learner asking 8 times at once, then each in turn one request at a time until
   all are refused; every refusal of the second part checked against the ledger (a 402 while its
   level had room for one estimate is a false refusal) and the group's spend against its budget.

    .venv/bin/python benchmarks/school.py [--classes 4] [--learners 8] [--rounds 2] [--exams 8]
        [--reserve 1] [--chunk 32] [--skip share class exams quiz budget]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._school_budget import budget_class, budget_level
from benchmarks._serve import served, shipped_app
from content.schemas import json_schema, validate
from router.http.auth import hash_key
from tests.fakes import FakeOpenAI
from tests.fakes.base import Reply
from tests.fakes.scripted import example

SENTENCE = "Cells of {tag} divide: the membrane grows, the DNA is copied, part {n} of the story."
HOSTED = "gpt-4o-mini"


def key(name: str) -> str:
    return f"lx_school-{name}-0123456789abcdef"


def keys() -> list[dict[str, Any]]:
    """The school's key (its classes are groups of its tenant) and 30 keys of 30 other schools."""
    return [{"id": name, "tenant": name, "sha256": hash_key(key(name)), "max_tier": "assessment"}
            for name in ["school", *(f"solo-{n}" for n in range(30))]]


def lesson(tag: str, sentences: int) -> str:
    return " ".join(SENTENCE.format(tag=tag, n=n) for n in range(sentences))


def chat(model: str, system: str, question: str, tokens: int, tier: str,
         group: str | None = None) -> dict[str, Any]:
    return {"model": model, "max_tokens": tokens, "temperature": 0, "stream": True, "tier": tier,
            "stream_options": {"include_usage": True}, **({"group": group} if group else {}),
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


@dataclass
class Answer:
    group: int
    sent: float
    first: float
    end: float
    tokens: int
    error: str | None = None


async def stream(client: httpx.AsyncClient, url: str, who: str, body: dict[str, Any],
                 group: int = 0) -> Answer:
    sent, first, tokens, error = time.perf_counter(), 0.0, 0, None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600,
                             headers={"X-API-Key": key(who)}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("error"):
                error = chunk["error"].get("message", "")[:200]
            if not first and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return Answer(group, sent, first or end, end, tokens, error)


# -- 1. fair share -------------------------------------------------------------------------------

async def school_at_once(url: str, model: str, opts: argparse.Namespace, apart: bool,
                         tag: str) -> list[Answer]:
    requests = [(0, n) for n in range(3 * opts.learners)]  # the burst first
    requests += [(c, n) for n in range(opts.learners) for c in range(1, opts.classes)]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(requests) + 4)) as client:
        async def learner(group: int, n: int, delay: float) -> Answer:
            await asyncio.sleep(delay)
            body = chat(model, f"The lesson: {lesson(f'{tag}-{group}', opts.lesson_sentences)}",
                        f"Learner {n}: retell part {n} of the lesson.", opts.tokens, "interactive",
                        f"class-{group}" if apart else None)
            return await stream(client, url, "school", body, group)

        return await asyncio.gather(*(learner(g, n, 0.0 if g == 0 else 0.3) for g, n in requests))


def backlogged_window(answers: list[Answer]) -> tuple[float, float]:
    """The span during which every class had a request waiting for its first token."""
    groups = sorted({a.group for a in answers})
    times = sorted({t for a in answers for t in (a.sent, a.first)})
    inside = [t for t in times if all(any(a.sent <= t < a.first for a in answers if a.group == g)
                                      for g in groups)]
    return (inside[0], inside[-1]) if inside else (0.0, 0.0)


def shares(answers: list[Answer]) -> dict[int, int]:
    start, end = backlogged_window(answers)
    tokens = dict.fromkeys(sorted({a.group for a in answers}), 0)
    for a in answers:
        if start <= a.first <= end:
            tokens[a.group] += a.tokens
    return tokens


def rate(answers: list[Answer]) -> float:
    """Answer tokens per second of wall time, from the first request sent to the last answer's end."""
    return sum(a.tokens for a in answers) / (max(a.end for a in answers) - min(a.sent for a in answers))


def jain(values: list[int]) -> float:
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 0.0


def report_share(label: str, answers: list[Answer]) -> None:
    failed = [a.error for a in answers if a.error]
    if failed:
        print(f"  {label}: {len(failed)} failed, e.g. {failed[0]}")
    if os.environ.get("SCHOOL_DEBUG"):
        origin = min(a.sent for a in answers)
        print(f"    (times from {time.time() - time.perf_counter() + origin:.3f}, the epoch's)")
        for a in sorted(answers, key=lambda a: a.first):
            print(f"    class {a.group} sent {a.sent - origin:6.2f} first {a.first - origin:6.2f} "
                  f"end {a.end - origin:6.2f} tokens {a.tokens}")
    tokens = shares(answers)
    start, end = backlogged_window(answers)
    low, high = min(tokens.values()), max(tokens.values())
    others = sorted(a.first - a.sent for a in answers if a.group != 0)
    equal = sum(tokens.values()) / len(tokens)
    print(f"  {label}: backlogged {end - start:.1f} s; answer tokens started then, per class "
          f"{list(tokens.values())} (burst class first); of an equal share "
          f"{low / equal:.2f}x to {high / equal:.2f}x, max/min "
          f"{high / low if low else float('inf'):.2f}x, Jain {jain(list(tokens.values())):.3f}; "
          f"the other classes' TTFT p50 {statistics.median(others):.2f} s, p95 {p95(others):.2f} s; "
          f"all answers {rate(answers):.0f} tokens/s")


# -- 2. assessment TTFT --------------------------------------------------------------------------

def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def exams(client: httpx.AsyncClient, url: str, model: str, count: int, tag: str) -> list[float]:
    """Exam questions one at a time, each with a passage of its own (no cache holds it)."""
    times = []
    for n in range(count):
        body = chat(model, f"Exam passage: {lesson(f'exam-{tag}-{n}', 6)}",
                    f"Exam item {n}: in one word, what divides?", 8, "assessment", "class-0")
        answer = await stream(client, url, "school", body)
        times.append(answer.first - answer.sent)
        await asyncio.sleep(0.3)
    return times


async def assessment(url: str, model: str, opts: argparse.Namespace,
                     tag: str) -> tuple[list[float], list[float]]:
    """Exams' times to first token on the idle replica, then under background work."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=opts.background + 8)) as client:
        await exams(client, url, model, 2, f"{tag}-warm")
        idle = await exams(client, url, model, opts.exams, f"{tag}-idle")
        stop = asyncio.Event()

        async def background(n: int) -> None:
            for round_ in range(10_000):
                if stop.is_set():
                    return
                body = chat(model, f"Task {n}.{round_}: {lesson(f'{tag}-bg', opts.lesson_sentences)}",
                            "Write flashcards for every part.", opts.background_tokens, "background",
                            f"class-{1 + n % max(1, opts.classes - 1)}")
                try:
                    await stream(client, url, "school", body)
                except RuntimeError:  # a full queue's 429: try again shortly
                    await asyncio.sleep(0.5)

        workers = [asyncio.ensure_future(background(n)) for n in range(opts.background)]
        await asyncio.sleep(opts.warmup)  # slots full, queue filled
        loaded = await exams(client, url, model, opts.exams, f"{tag}-loaded")
        stop.set()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    await asyncio.sleep(2.0)  # the cancelled streams leave the replica
    return idle, loaded


def report_exams(label: str, idle: list[float], loaded: list[float], background: int) -> None:
    print(f"  {label}: idle TTFT p50 {statistics.median(idle):.2f} s, p95 {p95(idle):.2f} s; "
          f"under {background} background streams p50 {statistics.median(loaded):.2f} s, "
          f"p95 {p95(loaded):.2f} s (**{p95(loaded) / p95(idle):.2f}x** idle; {len(idle)} exams each)")


# -- 3. artifacts --------------------------------------------------------------------------------

async def quiz_class(url: str, fake: FakeOpenAI, opts: argparse.Namespace) -> None:
    quiz = json.dumps(example(json_schema("quiz")))
    request = {"content": lesson("quiz", 8), "content_type": "quiz", "difficulty": "intermediate",
               "persona": "visual", "model": HOSTED, "stream": False}
    rng = random.Random(23)

    async def ask(client: httpx.AsyncClient, who: str, user: str) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0, opts.spread))
        body = {**request, "user_id": user, **({"group_id": "class-0"} if who == "school" else {})}
        response = await client.post(f"{url}/api/v1/ai/generate-content", timeout=120,
                                     json=body, headers={"X-API-Key": key(who)})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=40)) as client:
        for label, who in (("one class", lambda n: "school"), ("30 schools", lambda n: f"solo-{n}")):
            fake.reset()
            fake.enqueue(*(Reply(text=quiz) for _ in range(60)))
            answers = await asyncio.gather(*(ask(client, who(n), f"learner-{n}") for n in range(30)))
            meta = [a["metadata"] for a in answers]
            valid = sum(validate("quiz", json.dumps(a.get("data")))[0] is not None for a in answers)
            cached = sum(bool(m.get("cached")) for m in meta)
            shared = sum(bool(m.get("single_flight", {}).get("shared")) for m in meta)
            billed = sum(m.get("billed_usd", 0.0) for m in meta)
            print(f"  {label}: {len(fake.requests)} generations on the fake, {cached} replayed "
                  f"from kept artifacts, {shared} shared a run in flight, {valid}/30 schema-valid; "
                  f"billed ${billed:.6f}")
            if label == "one class":
                shared_cost = billed
            else:
                print(f"  one class's quiz costs {shared_cost / billed:.1%} of 30 learners' uncached")


# -- the run -------------------------------------------------------------------------------------

def config(shipped: dict[str, Any], fake: FakeOpenAI, ledger: Path,
           reserve: int, chunk: int | None) -> dict[str, Any]:
    """The shipped app with these assessment slots and prefill chunk, its LLM server reserving
    half a CPU (two variants in one Ray of 2 CPUs: they take turns, interleaved)."""
    local = dict(shipped["local_models"][0])
    engine = {k: v for k, v in local["llama_cpp"].items()
              if k not in ("assessment_slots", "prefill_chunk")}
    local["llama_cpp"] = {**engine, "assessment_slots": reserve,
                          **({"prefill_chunk": chunk} if chunk else {})}
    local["ray_actor_options"] = {"num_cpus": 0.5}
    return {**shipped, "local_models": [local],
            "embedder": {**shipped.get("embedder", {}), "ray_actor_options": {"num_cpus": 0.25}},
            "auth": {"enabled": True, "api_keys": keys()},
            "ledger": {"database_url": f"sqlite:///{ledger}"},
            "budgets": {"levels": [budget_level(HOSTED)]},
            "rate_limits": {**shipped.get("rate_limits", {}), "key_requests_per_minute": 100_000},
            # The model a request names serves it, nothing spills or falls back, and waiting for a
            # first token is not cut short: demand beyond the local model's capacity waits in its
            # queue (as on the embedded default, which has no hosted model), and that queue's
            # order is what is measured. The fake serves what names a hosted model.
            "router": {**shipped.get("router", {}), "spill_over_wait_s": None,
                       "enable_fallback": False, "request_timeout_s": 300,
                       "first_token_timeout_s": 300,
                       # A stream whose client left stops at once, not router.resume.grace_s
                       # later: the background work cancelled after the exams would otherwise
                       # go on into the next part's measurement (up to 88 streams for 15 s).
                       "resume": {"grace_s": 0},
                       "providers": {"openai": {"base_url": f"{fake.url}/v1"}}}}


def load() -> str:
    """The box's load average (1, 5, 15 minutes): other work on it slows every figure here."""
    return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--learners", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--lesson-sentences", type=int, default=10)  # ~200 tokens
    parser.add_argument("--rounds", type=int, default=2, help="the variants' turns, interleaved")
    parser.add_argument("--exams", type=int, default=8, help="per round, idle and loaded each")
    parser.add_argument("--background", type=int, default=24, help="background streams in flight")
    parser.add_argument("--background-tokens", type=int, default=96)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--reserve", type=int, default=1, help="assessment_slots of the variant")
    parser.add_argument("--chunk", type=int, default=32, help="prefill_chunk of the variant")
    parser.add_argument("--spread", type=float, default=3.0)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["share", "class", "exams", "quiz", "budget"])
    opts = parser.parse_args()
    shipped = shipped_app()
    model = shipped["local_models"][0]["name"]
    os.environ.setdefault("OPENAI_API_KEY", "sk-school")
    fake = FakeOpenAI()
    fake.start()
    print(f"{opts.classes} classes x {opts.learners} learners (the burst class {3 * opts.learners}); "
          f"configs/serve.yaml ({shipped['local_models'][0]['llama_cpp']}) + hosted fake; {load()}")
    variants = [(0, None), *([(opts.reserve, opts.chunk)] if opts.reserve else [])]
    labels = [f"assessment_slots {r}, prefill_chunk {c or 'n_batch'}" for r, c in variants]
    try:
        with tempfile.TemporaryDirectory() as var:
            apps = [config(shipped, fake, Path(var) / f"usage-{n}.db", *v)
                    for n, v in enumerate(variants)]
            with served(apps[0], {f"/variant{n}": a for n, a in enumerate(apps) if n}) as root:
                urls = [root, *(f"{root}/variant{n}" for n in range(1, len(apps)))]
                measure(urls, labels, model, fake, opts)
    finally:
        fake.stop()


def measure(urls: list[str], labels: list[str], model: str, fake: FakeOpenAI,
            opts: argparse.Namespace) -> None:
    """The hosted parts on the first variant; the engine's parts on each, in turns (the order
    alternating each round), so that the box's other work weighs on them alike."""
    if "quiz" not in opts.skip:
        print("30 identical quiz requests (hosted fake):")
        asyncio.run(quiz_class(urls[0], fake, opts))
    if "budget" not in opts.skip:
        print("a class's budget (hosted fake), checked against the ledger:")
        asyncio.run(budget_class(urls[0], fake, key("school"), opts.learners))
    exams_of: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in range(len(urls))}
    rates: dict[int, list[float]] = {n: [] for n in range(len(urls))}
    for round_ in range(opts.rounds):
        for n in list(range(len(urls)))[::(-1) ** round_]:
            tag = f"r{round_}v{n}"
            if "share" not in opts.skip:
                print(f"round {round_ + 1}, {labels[n]}: fair share of the local model's answer "
                      f"tokens while every class waits ({load()})")
                for apart, name in ((True, "a group per class"), (False, "no group (one group)")):
                    if apart or n == 0:
                        report_share(name, asyncio.run(
                            school_at_once(urls[n], model, opts, apart, f"{tag}-{apart}")))
            if "class" not in opts.skip:
                alone = asyncio.run(school_at_once(urls[n], model, argparse.Namespace(
                    **{**vars(opts), "classes": 1}), True, f"{tag}-alone"))
                rates[n].append(rate(alone))
                print(f"round {round_ + 1}, {labels[n]}: one interactive class alone, "
                      f"{len(alone)} requests: {rates[n][-1]:.1f} tokens/s ({load()})")
            if "exams" not in opts.skip:
                print(f"round {round_ + 1}, {labels[n]}: exams idle, then under background work "
                      f"({load()})")
                idle, loaded = asyncio.run(assessment(urls[n], model, opts, tag))
                report_exams("this round", idle, loaded, opts.background)
                exams_of[n][0].extend(idle)
                exams_of[n][1].extend(loaded)
    if "class" not in opts.skip:
        print("one interactive class alone, answer tokens/s, median of the rounds: " + "; ".join(
            f"{labels[n]} {statistics.median(r):.1f}" for n, r in rates.items()))
    if "exams" not in opts.skip:
        print(f"assessment time to first token, every round ({load()}):")
        for n, (idle, loaded) in exams_of.items():
            report_exams(labels[n], idle, loaded, opts.background)


if __name__ == "__main__":
    main()
