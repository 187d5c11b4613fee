"""One learner alone: the llama.cpp engine's continuous-batching loop (LlamaCppEngine.generate with
`parallel` slots: batches, per-sequence samplers, stop matching, coalescing) against llama-cpp-python's
create_chat_completion(stream=True) on a Llama of its own (what the engine ran before batching), in
process, same model, same thread count, rounds interleaved.

    .venv/bin/python benchmarks/llamacpp_loop.py [--threads 2] [--parallel 8] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.local_llm import MESSAGES, direct_run
from core.config import LlamaCppSettings
from core.generation import GenerationParams
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf


async def engine_run(engine: LlamaCppEngine, tokens: int) -> tuple[float, float, int]:
    params = GenerationParams(MESSAGES, tokens, temperature=0.0)
    start, first, generated = time.perf_counter(), 0.0, 0
    async for delta in engine.generate(params):
        first = first or (time.perf_counter() - start if delta.text else 0.0)
        if delta.usage is not None:
            generated = delta.usage.completion_tokens
    return time.perf_counter() - start, first, generated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    opts = parser.parse_args()
    from llama_cpp import Llama

    path = resolve_gguf(find_local_model("smollm2-135m"))
    engine = LlamaCppEngine(path, LlamaCppSettings(n_ctx=2048, n_threads=opts.threads,
                                                   parallel=opts.parallel))
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=opts.threads, verbose=False)
    ours, theirs = [], []
    for _ in range(opts.rounds):
        ours.append(asyncio.run(engine_run(engine, opts.tokens)))
        theirs.append(direct_run(llm, opts.tokens))
    # Both run greedy to max_tokens, so wall time compares like with like (the library's stream
    # has no token count: a chunk can hold several tokens).
    for name, runs in (("engine loop", ours), ("create_chat_completion", theirs)):
        print(f"{name:24s} {statistics.median(t for t, _, _ in runs) * 1000:7.1f} ms for "
              f"{opts.tokens} tokens  TTFT {statistics.median(f for _, f, _ in runs) * 1000:5.1f} ms"
              f"  ({runs[0][2]} {'tokens' if runs is ours else 'chunks'})")
    ratio = statistics.median(t for t, _, _ in theirs) / statistics.median(t for t, _, _ in ours)
    print(f"speed, engine loop / create_chat_completion: {ratio:.3f}")


if __name__ == "__main__":
    main()
