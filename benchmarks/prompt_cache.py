"""Prompt caching on purpose, priced: a class of learners each asking one question about the same
lesson (the system message) on a hosted model, through the whole API in process with the real
adapters, against the fakes that cache as the providers do (tests/fakes/caching.py). Once with the
service's caching on, once off (`prompt_cache: false`), each on a fresh fake: the fake's own invoice
priced at the built-in catalogue's list prices (models/catalog.py, current models), and the
ledger's total next to it.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/prompt_cache.py [--learners 30] [--lesson-tokens 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.config import HostedProviderConfig
from models.catalog import HOSTED_MODELS, ModelCard
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.openai import OpenAIProvider
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.fakes.caching import InvoiceLine
from tests.fakes.inprocess import config, start

CARDS = {c.name: c for c in HOSTED_MODELS}
PER = 1_000_000
# The class's model per provider and tier; the first is held to the 20 % goal.
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "gpt-4.1-mini", "gpt-4o-mini")


@dataclass(frozen=True)
class Bill:
    requests: int
    prompt_tokens: int
    cached: int
    written: int
    input_usd: float  # the prompt's tokens, each at its rate: the lesson's cost, and the questions'
    total_usd: float
    ledger_usd: float


def rate(price: float | None, otherwise: float) -> float:
    return otherwise if price is None else price


def input_usd(card: ModelCard, line: InvoiceLine) -> float:
    """The fake's invoice line's prompt, priced from the fake's own counts (not the router's)."""
    return (line.input * card.input_per_million
            + line.cache_read * rate(card.cached_input_per_million, card.input_per_million)
            + line.cache_write_5m * rate(card.cache_write_per_million, card.input_per_million)
            + line.cache_write_1h * rate(card.cache_write_1h_per_million, card.input_per_million)
            ) / PER


async def run_class(model: str, caching: bool, fake: FakeOpenAI | FakeAnthropic, learners: int,
                    lesson: str) -> Bill:
    fake.reset()
    card = CARDS[model]
    settings = HostedProviderConfig(base_url=fake.url + ("/v1" if card.provider == "openai" else ""))
    provider = (OpenAIProvider.from_env(settings, {"OPENAI_API_KEY": "k"})
                if card.provider == "openai"
                else AnthropicProvider.from_env(settings, {"ANTHROPIC_API_KEY": "k"}))
    with tempfile.TemporaryDirectory() as folder:
        app = start(config(folder, router={"first_token_timeout_s": 30, "idle_timeout_s": 30,
                                           "request_timeout_s": 60},
                           catalog={"builtins": True, "models": []}),
                    providers={card.provider: provider})
        try:
            for learner in range(learners):
                response = await app.post("/v1/chat/completions", {
                    "model": model, "user": f"learner-{learner}", "max_tokens": 100,
                    "prompt_cache": caching, "messages": [
                        {"role": "system", "content": lesson},
                        {"role": "user", "content": f"Learner {learner}: what does this mean?"}]})
                response.raise_for_status()
            ledger = sum(r["cost_usd"] for r in await app.records())
        finally:
            await app.close()
    lines = fake.invoice
    inputs = sum(input_usd(card, line) for line in lines)
    outputs = sum(line.output for line in lines) * card.output_per_million / PER
    return Bill(len(lines), sum(x.input + x.cache_read + x.cache_write_5m + x.cache_write_1h
                                for x in lines),
                sum(x.cache_read for x in lines), sum(x.cache_write_5m + x.cache_write_1h
                                                      for x in lines),
                inputs, inputs + outputs, ledger)


def report(model: str, on: Bill, off: Bill) -> None:
    """The two runs side by side; prices are the catalogue's (models/catalog.py)."""
    print(f"\n{model}: {on.requests} learners, {on.prompt_tokens // on.requests} prompt tokens each")
    print(f"{'':12}{'cached':>9}{'written':>9}{'input $':>12}{'invoice $':>12}{'ledger $':>12}"
          f"{'ledger/invoice':>16}")
    for name, bill in (("caching on", on), ("caching off", off)):
        print(f"{name:12}{bill.cached:>9}{bill.written:>9}{bill.input_usd:>12.6f}"
              f"{bill.total_usd:>12.6f}{bill.ledger_usd:>12.6f}"
              f"{bill.ledger_usd / bill.total_usd:>16.4%}")
    full = on.prompt_tokens * CARDS[model].input_per_million / PER
    print(f"input cost with caching on / off: {on.input_usd / off.input_usd:.1%}; "
          f"on / every prompt token at the input rate (${full:.6f}): {on.input_usd / full:.1%}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--lesson-tokens", type=int, default=2000)
    args = parser.parse_args()
    lesson = " ".join(f"w{i % 997}" for i in range(args.lesson_tokens))  # a token a word (fakes)
    fakes = {"openai": FakeOpenAI().start(), "anthropic": FakeAnthropic().start()}
    failures = []
    try:
        for model in MODELS:
            fake = fakes[CARDS[model].provider]
            on = await run_class(model, True, fake, args.learners, lesson)
            off = await run_class(model, False, fake, args.learners, lesson)
            report(model, on, off)
            failures += [f"{model}: the ledger is {b.ledger_usd / b.total_usd - 1:+.2%} off the "
                         "invoice" for b in (on, off) if abs(b.ledger_usd / b.total_usd - 1) > 0.01]
            if model == MODELS[0] and on.input_usd > 0.2 * off.input_usd:
                failures.append(f"{model}: caching on costs over 20 % of off")
    finally:
        for fake in fakes.values():
            fake.stop()
    print("\n" + ("\n".join(failures) if failures else
                  "ok: every ledger within 1 % of its invoice; Sonnet on <= 20 % of off"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    asyncio.run(main())
