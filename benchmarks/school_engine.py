"""A school's burst on one llama.cpp replica, in process (no Serve, no HTTP): one class of 24
learners, then three classes of 8 each 0.3 s later, each class on a ~200-token lesson of its own and
naming its group (as benchmarks/school.py sends them), 32 answer tokens each, on configs/serve.yaml's
engine settings; with the parked prefixes (`parked_prefixes`, default one a slot) against none, a
fresh engine each turn, the order alternating. Reports answer tokens/s and the prompt tokens
computed and reused (a warm-up burst and the measured one).

    .venv/bin/python benchmarks/school_engine.py [--rounds 3]
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
from benchmarks.school import lesson
from core.config import LlamaCppSettings
from core.generation import GenerationParams
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf
from tests.deltas import collect


async def burst(engine: LlamaCppEngine, tag: str) -> float:
    requests = [(0, n) for n in range(24)] + [(c, n) for n in range(8) for c in (1, 2, 3)]

    async def learner(group: int, n: int) -> int:
        await asyncio.sleep(0.0 if group == 0 else 0.3)
        params = GenerationParams(
            messages=[{"role": "system", "content": f"The lesson: {lesson(f'{tag}-{group}', 10)}"},
                      {"role": "user", "content": f"Learner {n}: retell part {n} of the lesson."}],
            max_tokens=32, temperature=0, group=f"class-{group}")
        return (await collect(engine.generate(params))).usage.completion_tokens

    started = time.perf_counter()
    tokens = await asyncio.gather(*(learner(g, n) for g, n in requests))
    return sum(tokens) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    shipped = shipped_app()
    engine_settings = shipped["local_models"][0]["llama_cpp"]
    path = resolve_gguf(find_local_model("smollm2-135m"))
    rates: dict[str, list[float]] = {"parked": [], "none": []}
    for round_ in range(opts.rounds):
        for name in list(rates)[::(-1) ** round_]:
            settings = LlamaCppSettings(**{**engine_settings,
                                           **({"parked_prefixes": 0} if name == "none" else {})})
            engine = LlamaCppEngine(path, settings)
            try:
                asyncio.run(burst(engine, f"warm-{round_}-{name}"))
                rates[name].append(asyncio.run(burst(engine, f"{round_}-{name}")))
                load = engine.load()
            finally:
                engine.close()
            assert load is not None
            print(f"round {round_ + 1}, {name}: {rates[name][-1]:.1f} answer tokens/s; prompt tokens "
                  f"computed {load.prompt_tokens_computed}, reused {load.prompt_tokens_reused}",
                  flush=True)
    parked, none = (statistics.median(rates[n]) for n in ("parked", "none"))
    print(f"median: parked {parked:.1f}, none {none:.1f} answer tokens/s (**{parked / none:.2f}x**)")


if __name__ == "__main__":
    main()
