"""Exams under a class's background work on one llama.cpp replica, in process (no Serve, no HTTP):
the time to first token of exam questions (the assessment tier, a ~165-token passage of their own,
one at a time) on the idle replica, then while 24 background streams (96 answer tokens each, ~220
prompt tokens no cache holds) saturate it; on configs/serve.yaml's engine settings with each
`--chunks` value as `prefill_chunk` (the lower tiers' prompt tokens a step, in all), a fresh engine
each, the order alternating by round. Reports TTFT p50/p95 idle and loaded, their ratio, and the
background's answer tokens/s while the exams ran (what a smaller chunk costs the other tiers).

    .venv/bin/python benchmarks/school_exams.py [--exams 24] [--rounds 2] [--chunks 64 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._serve import shipped_app
from benchmarks.school import lesson, p95
from core.config import LlamaCppSettings
from core.generation import GenerationParams
from core.tiers import PRIORITY
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf
from tests.deltas import collect

BACKGROUND = 24


async def exams(engine: LlamaCppEngine, count: int, tag: str) -> list[float]:
    times = []
    for n in range(count):
        params = GenerationParams(
            messages=[{"role": "system", "content": f"Exam passage: {lesson(f'exam-{tag}-{n}', 6)}"},
                      {"role": "user", "content": f"Exam item {n}: in one word, what divides?"}],
            max_tokens=8, temperature=0, group="class-0", priority=PRIORITY["assessment"])
        sent, first = time.perf_counter(), None
        async for _ in engine.generate(params):
            first = first or time.perf_counter()
        assert first is not None
        times.append(first - sent)
        await asyncio.sleep(0.3)
    return times


async def session(engine: LlamaCppEngine, count: int, tag: str) -> tuple[list[float], list[float],
                                                                         float]:
    """(idle TTFTs, loaded TTFTs, background answer tokens/s while the loaded exams ran)."""
    await exams(engine, 2, f"{tag}-warm")
    idle = await exams(engine, count, f"{tag}-idle")
    finished: list[tuple[float, int]] = []  # (when, answer tokens)

    async def background(n: int) -> None:
        for round_ in range(10_000):
            params = GenerationParams(
                messages=[{"role": "system", "content": f"Task {n}.{round_}: {lesson(tag, 10)}"},
                          {"role": "user", "content": "Write flashcards for every part."}],
                max_tokens=96, temperature=0, group=f"class-{1 + n % 3}",
                priority=PRIORITY["background"])
            answer = await collect(engine.generate(params))
            finished.append((time.perf_counter(), answer.usage.completion_tokens))

    workers = [asyncio.ensure_future(background(n)) for n in range(BACKGROUND)]
    await asyncio.sleep(8.0)  # slots full, queue filled
    start = time.perf_counter()
    loaded = await exams(engine, count, f"{tag}-loaded")
    took = time.perf_counter() - start
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await asyncio.sleep(1.0)  # the cancelled sequences leave their slots
    return idle, loaded, sum(n for when, n in finished if when >= start) / took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exams", type=int, default=24, help="per round, idle and loaded each")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 16])
    opts = parser.parse_args()
    shipped = shipped_app()
    engine_settings = shipped["local_models"][0]["llama_cpp"]
    path = resolve_gguf(find_local_model("smollm2-135m"))
    results: dict[int, tuple[list[float], list[float], list[float]]] = {
        chunk: ([], [], []) for chunk in opts.chunks}
    for round_ in range(opts.rounds):
        for chunk in opts.chunks[::(-1) ** round_]:
            engine = LlamaCppEngine(path, LlamaCppSettings(**{**engine_settings,
                                                               "prefill_chunk": chunk}))
            try:
                idle, loaded, rate = asyncio.run(session(engine, opts.exams, f"{round_}-{chunk}"))
            finally:
                engine.close()
            for into, values in zip(results[chunk], (idle, loaded, [rate]), strict=True):
                into.extend(values)
            print(f"round {round_ + 1}, prefill_chunk {chunk}: " + summary(idle, loaded, [rate]),
                  flush=True)
    for chunk, (idle, loaded, rates) in results.items():
        print(f"all rounds, prefill_chunk {chunk}: " + summary(idle, loaded, rates))


def summary(idle: list[float], loaded: list[float], rates: list[float]) -> str:
    return (f"idle TTFT p50 {statistics.median(idle):.2f} s, p95 {p95(idle):.2f} s; under "
            f"{BACKGROUND} background streams p50 {statistics.median(loaded):.2f} s, p95 "
            f"{p95(loaded):.2f} s (**{p95(loaded) / p95(idle):.2f}x** idle; {len(idle)} exams "
            f"each); background {statistics.median(rates):.1f} answer tokens/s")


if __name__ == "__main__":
    main()
