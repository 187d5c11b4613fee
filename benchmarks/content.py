"""Generate-content on the packaged local model, one run: time to first content event and total
time per content type, and the schema-valid rate of quiz/flashcards over different inputs, before
and after the repair step.

    .venv/bin/python benchmarks/content.py [--inputs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):  # the local model alone: no escalation
    os.environ.pop(key, None)
from benchmarks._serve import served  # noqa: E402
from content.templates import ContentType  # noqa: E402

TOPICS = ["Photosynthesis turns light, water and CO2 into sugar and oxygen.",
          "Fractions describe parts of a whole: 3/4 means three of four equal parts.",
          "Newton's second law: force equals mass times acceleration.",
          "The water cycle: evaporation, condensation, precipitation, collection.",
          "Mitochondria release energy from food through cellular respiration.",
          "A noun names a person, place or thing; a verb names an action.",
          "The Pythagorean theorem: a^2 + b^2 = c^2 in a right triangle.",
          "Volcanoes form where magma reaches the surface through the crust.",
          "Supply and demand set prices in a market economy.",
          "DNA stores genetic information as sequences of four bases.",
          "The French Revolution began in 1789 and ended the monarchy.",
          "Prime numbers have exactly two divisors: 1 and themselves.",
          "Sound is a wave that travels through air by compressing it.",
          "The heart pumps blood through arteries, capillaries and veins.",
          "Electric current is the flow of charge, measured in amperes.",
          "Plate tectonics moves continents a few centimeters each year.",
          "A food chain shows who eats whom in an ecosystem.",
          "Variables in algebra stand for unknown numbers.",
          "The Moon's phases come from its position relative to the Sun.",
          "Acids have a pH below 7; bases have a pH above 7."]


def generate(url: str, content_type: str, material: str) -> tuple[float, float, dict]:
    body = {"content": material, "content_type": content_type, "model": "smollm2-135m",
            "stream": True, "max_tokens": 400}
    start, first, last = time.perf_counter(), 0.0, {}
    with httpx.stream("POST", f"{url}/api/v1/ai/generate-content", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if not first and event.get("content"):
                first = time.perf_counter() - start
            last = event
    return first, time.perf_counter() - start, last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=20)
    opts = parser.parse_args()
    args = {"local_models": [{"name": "smollm2-135m", "ray_actor_options": {"num_cpus": 1},
                              "llama_cpp": {"n_ctx": 4096, "n_threads": 1}}],
            "router": {"ray_actor_options": {"num_cpus": 0.25}}, "embedder": {"enabled": False},
            "artifacts": {"enabled": False}}  # it measures generation: no kept artifact replayed
    with served(args) as url:
        print("content type       TTFT ms   total s   completion tokens")
        for content_type in typing.get_args(ContentType):
            first, total, last = generate(url, content_type, TOPICS[0])
            tokens = last.get("metadata", {}).get("usage", {}).get("completion_tokens")
            print(f"{content_type:18s} {first * 1000:7.0f}   {total:7.2f}   {tokens}")
        for content_type in ("quiz", "flashcards"):
            outcomes = [generate(url, content_type, t)[2] for t in TOPICS[:opts.inputs]]
            valid = [o for o in outcomes if o.get("type") == "done"]
            first_try = [o for o in valid if not o["metadata"]["repaired"]]
            n = len(outcomes)
            print(f"{content_type}: valid on first answer {len(first_try)}/{n}, "
                  f"after repair {len(valid)}/{n}; median total "
                  f"{statistics.median(generate(url, content_type, t)[1] for t in TOPICS[:3]):.2f} s")


if __name__ == "__main__":
    main()
