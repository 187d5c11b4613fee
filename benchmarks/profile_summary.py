"""Summarize py-spy's collapsed stacks (`py-spy record -f raw`): the share of samples spent in each
area of code (inclusive: a sample counts for every area on its stack), the busiest first.

    .venv/bin/python benchmarks/profile_summary.py PROFILE.txt [--top 25]"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

AREAS = [  # (name, pattern matched against a frame "function (file:line)")
    ("openai SDK", r"\(openai/"),
    ("httpx / httpcore", r"\((httpx|httpcore)2?/"),
    ("pydantic", r"\(pydantic"),
    ("FastAPI", r"\(fastapi/"),
    ("Starlette", r"\(starlette/"),
    ("Ray Serve replica", r"\(ray/serve/"),
    ("Ray core", r"\(ray/(?!serve/)"),
    ("asyncio", r"\(asyncio/"),
    ("router.run.fallback", r"\(router/run/fallback\.py"),
    ("router.services.chat", r"\(router/services/chat\.py"),
    ("router.run.providers", r"\(router/run/providers/"),
    ("router.usage.ratelimit", r"\(router/usage/ratelimit\.py"),
    ("router.usage", r"\(router/usage/"),
    ("router.wire.sse", r"\(router/wire/sse\.py"),
    ("router.http.auth/limits", r"\(router/http/(auth|limits|idempotency)\.py"),
    ("router.http.routes", r"\(router/http/routes\.py"),
    ("router.run.policy", r"\(router/run/policy\.py"),
    ("json", r"\(json/"),
    ("uuid", r"\(uuid\.py"),
    ("sqlite3", r"sqlite3"),
    ("logging", r"\(logging/"),
]


def innermost(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in AREAS:
            if re.search(pattern, frame):
                return name
    return "other"


def summarize(path: Path, top: int) -> None:
    totals: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()  # by the innermost area on the stack
    functions: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        for area in {name for name, pattern in AREAS for f in frames if re.search(pattern, f)}:
            totals[area] += n
        for frame in set(frames):
            functions[frame] += n
        own[innermost(frames)] += n
    print(f"{samples} samples; share by area: inclusive (on the stack), own (innermost area)")
    for area, n in totals.most_common():
        print(f"{100 * n / samples:5.1f}%  {100 * own[area] / samples:5.1f}%  {area}")
    print(f"        {100 * own['other'] / samples:5.1f}%  other")
    print(f"\ntop {top} functions (inclusive):")
    for frame, n in functions.most_common(top):
        print(f"{100 * n / samples:5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    opts = parser.parse_args()
    summarize(opts.profile, opts.top)
