"""One learner's long prompt (~3,000 tokens) admitted first, then 6 learners' short ones 0.05 s
later, at the interactive tier, on the shipped engine in process: the short ones' time to first
token beside it and alone.

    .venv/bin/python benchmarks/long_prompt.py
"""

from __future__ import annotations

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
from core.tiers import PRIORITY
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf


async def ask(engine: LlamaCppEngine, system: str, delay: float) -> float:
    await asyncio.sleep(delay)
    params = GenerationParams(messages=[{"role": "system", "content": system},
                                        {"role": "user", "content": "Retell it."}],
                              max_tokens=8, temperature=0, priority=PRIORITY["interactive"])
    sent, first = time.perf_counter(), None
    async for _ in engine.generate(params):
        first = first or time.perf_counter()
    assert first is not None
    return first - sent


async def run(engine: LlamaCppEngine, tag: str) -> tuple[list[float], list[float]]:
    beside = await asyncio.gather(ask(engine, lesson(f"long-{tag}", 150), 0.0),
                                  *(ask(engine, lesson(f"s-{tag}-{n}", 6), 0.05) for n in range(6)))
    alone = await asyncio.gather(*(ask(engine, lesson(f"a-{tag}-{n}", 6), 0.0) for n in range(6)))
    return beside, alone


def main() -> None:
    settings = LlamaCppSettings(**shipped_app()["local_models"][0]["llama_cpp"])
    engine = LlamaCppEngine(resolve_gguf(find_local_model("smollm2-135m")), settings)
    try:
        asyncio.run(run(engine, "warm"))
        beside, alone = asyncio.run(run(engine, "measured"))
    finally:
        engine.close()
    print(f"long prompt TTFT {beside[0]:.2f} s; 6 short beside it p50 "
          f"{statistics.median(beside[1:]):.2f} s, max {max(beside[1:]):.2f} s; 6 short alone p50 "
          f"{statistics.median(alone):.2f} s, max {max(alone):.2f} s")


if __name__ == "__main__":
    main()
