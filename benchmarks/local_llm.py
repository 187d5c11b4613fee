"""Generated tokens/s of the packaged GGUF, (a) streamed through the whole HTTP graph and (b) calling
llama-cpp-python directly in process, same model, same threads, rounds interleaved in one run.

    .venv/bin/python benchmarks/local_llm.py [--threads 1] [--tokens 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._serve import served
from models import find_local_model, resolve_gguf

MESSAGES = [{"role": "user", "content": "Explain how plants make food from sunlight, step by step."}]


def served_run(client: httpx.Client, url: str, tokens: int) -> tuple[float, float, int]:
    body = {"model": "smollm2-135m", "messages": MESSAGES, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    start, first, generated = time.perf_counter(), 0.0, 0
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                generated = chunk["usage"]["completion_tokens"]
    return time.perf_counter() - start, first, generated


def direct_run(llm, tokens: int) -> tuple[float, float, int]:
    start, first, pieces = time.perf_counter(), 0.0, 0
    for chunk in llm.create_chat_completion(MESSAGES, max_tokens=tokens, temperature=0,
                                            repeat_penalty=1.1, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            pieces += 1
            first = first or time.perf_counter() - start
    return time.perf_counter() - start, first, pieces


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    from llama_cpp import Llama

    args = {"local_models": [{"name": "smollm2-135m", "ray_actor_options": {"num_cpus": 1},
                              "llama_cpp": {"n_ctx": 2048, "n_threads": opts.threads}}],
            "router": {"ray_actor_options": {"num_cpus": 0.25}}}
    llm = Llama(model_path=str(resolve_gguf(find_local_model("smollm2-135m"))), n_ctx=2048,
                n_threads=opts.threads, n_threads_batch=opts.threads, verbose=False)
    rates: dict[str, list[float]] = {"served": [], "direct": []}
    ttft: dict[str, list[float]] = {"served": [], "direct": []}
    # One kept-alive connection, as a backend's client keeps: a new connection per request adds
    # ~20 ms to the first token here (measured: the router's handler starts 22 ms after the client
    # sends, against 1.5 ms on a kept-alive connection).
    with served(args) as url, httpx.Client() as client:
        served_run(client, url, 8), direct_run(llm, 8)  # warm both
        for _ in range(opts.rounds):
            seconds, first, generated = served_run(client, url, opts.tokens)
            rates["served"].append(generated / seconds)
            ttft["served"].append(first)
            d_seconds, d_first, _ = direct_run(llm, opts.tokens)
            rates["direct"].append(generated / d_seconds)  # same greedy output, same token count
            ttft["direct"].append(d_first)
    served_rate, direct_rate = (statistics.median(rates[k]) for k in ("served", "direct"))
    print(f"threads={opts.threads} tokens={opts.tokens} rounds={opts.rounds}")
    for key in ("served", "direct"):
        print(f"{key:7s} {statistics.median(rates[key]):7.1f} tok/s   "
              f"time to first token {statistics.median(ttft[key]) * 1000:6.1f} ms")
    print(f"ratio served/direct: {served_rate / direct_rate:.3f}")


if __name__ == "__main__":
    main()
