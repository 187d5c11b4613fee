"""One learner alone: the llama.cpp engine's continuous-batching loop (LlamaCppEngine.generate with
`parallel` slots: batches, per-sequence samplers, stop matching, coalescing) against the engine as it
was before batching (`--before REV`: deployments/llm/llamacpp.py at that commit, read with `git show`,
one sequence under a lock) and llama-cpp-python's create_chat_completion(stream=True), each on a
Llama of its own, in process, same model, same thread count, greedy, rounds interleaved.

    .venv/bin/python benchmarks/llamacpp_loop.py [--threads 2] [--parallel 8] [--tokens 128] \
        [--before beb7064^]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.local_llm import MESSAGES, direct_run
from core.config import LlamaCppSettings
from core.generation import GenerationParams
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf

ROOT = Path(__file__).resolve().parents[1]

Run = tuple[float, float, int]  # seconds in all, seconds to the first token, tokens (or chunks)


async def engine_run(engine: Any, tokens: int) -> Run:
    params = GenerationParams(MESSAGES, tokens, temperature=0.0)
    start, first, generated = time.perf_counter(), 0.0, 0
    async for delta in engine.generate(params):
        first = first or (time.perf_counter() - start if delta.text else 0.0)
        if delta.usage is not None:
            generated = delta.usage.completion_tokens
    return time.perf_counter() - start, first, generated


def engine_before(rev: str) -> type:
    """The engine class as it was at `rev`, loaded from git beside today's modules."""
    source = subprocess.run(["git", "show", f"{rev}:deployments/llm/llamacpp.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "llamacpp_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("llamacpp_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LlamaCppEngine  # type: ignore[no-any-return]


def report(runs: dict[str, list[Run]], tokens: int) -> None:
    base = statistics.median(t - f for t, f, _ in runs["batching engine"])
    for name, measured in runs.items():
        total = statistics.median(t for t, _, _ in measured)
        first = statistics.median(f for _, f, _ in measured)
        decode = statistics.median(t - f for t, f, _ in measured)
        print(f"{name:24s} {total * 1000:7.1f} ms for {tokens} tokens  TTFT {first * 1000:5.1f} ms"
              f"  decode {decode * 1000:7.1f} ms (batching engine's decode rate: "
              f"{decode / base:.3f}x this one's)  ({measured[0][2]} "
              f"{'chunks' if name == 'create_chat_completion' else 'tokens'})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", help="a commit whose single-sequence engine to compare")
    opts = parser.parse_args()
    from llama_cpp import Llama

    path = resolve_gguf(find_local_model("smollm2-135m"))
    settings = LlamaCppSettings(n_ctx=2048, n_threads=opts.threads, parallel=opts.parallel)
    engines: dict[str, Any] = {"batching engine": LlamaCppEngine(path, settings)}
    if opts.before:
        single = LlamaCppSettings(n_ctx=2048, n_threads=opts.threads)
        engines["engine before batching"] = engine_before(opts.before)(path, single)
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=opts.threads, verbose=False)
    runs: dict[str, list[Run]] = {name: [] for name in [*engines, "create_chat_completion"]}
    for _ in range(opts.rounds):
        for name, engine in engines.items():
            runs[name].append(asyncio.run(engine_run(engine, opts.tokens)))
        runs["create_chat_completion"].append(direct_run(llm, opts.tokens))
    # All run greedy to max_tokens, so wall time compares like with like (the library's stream
    # has no token count: a chunk can hold several tokens).
    report(runs, opts.tokens)


if __name__ == "__main__":
    main()
