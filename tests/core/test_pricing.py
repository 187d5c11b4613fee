"""Costs from the one price table."""

from __future__ import annotations

import base64
import random
import string

import pytest

from core.generation import TokenUsage
from core.pricing import cost, estimate, estimate_tokens
from models.catalog import local_card
from tests.fakes.catalog import MODELS

MINI = next(c for c in MODELS if c.name == "gpt-4o-mini")


def test_cost_is_per_million_input_and_output_tokens() -> None:
    assert cost(MINI, TokenUsage(1_000_000, 0)) == 0.15
    assert cost(MINI, TokenUsage(0, 1_000_000)) == 0.60
    assert cost(MINI, TokenUsage(1000, 500)) == round((1000 * 0.15 + 500 * 0.60) / 1e6, 10)


def test_local_models_cost_their_configured_amortized_price() -> None:
    assert cost(local_card("smollm2-135m", 2048), TokenUsage(10**6, 10**6)) == 0
    assert cost(local_card("smollm2-135m", 2048, 0.01, 0.02), TokenUsage(10**6, 10**6)) == 0.03


def test_estimate_assumes_every_allowed_output_token() -> None:
    assert estimate(MINI, 100, 50) == cost(MINI, TokenUsage(100, 50))


def test_token_estimate_rounds_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcdef") == 2


ENGLISH = ("Photosynthesis is the process by which green plants use sunlight, water and carbon "
           "dioxide to make sugar and oxygen.")
CHINESE = "光合作用是绿色植物利用阳光、水和二氧化碳制造糖和氧气的过程。"
ARABIC = ("التمثيل الضوئي هو العملية التي تستخدم بها النباتات الخضراء ضوء الشمس والماء وثاني "
          "أكسيد الكربون لصنع السكر والأكسجين.")


@pytest.mark.parametrize(("text", "tokens_per_char"), [
    (CHINESE, 1.5),  # hosted tokenizers count about 1-1.5 tokens per Chinese character
    (ARABIC, 0.8),  # and about 0.3-0.8 per Arabic character (spaces included)
    (ENGLISH, 0.3),  # and about 0.25 per English character
], ids=["chinese", "arabic", "english"])
def test_token_estimate_is_on_the_high_side_in_every_script(text: str,
                                                            tokens_per_char: float) -> None:
    assert estimate_tokens(text) >= tokens_per_char * len(text)


def test_token_estimate_of_english_stays_near_four_characters_a_token() -> None:
    assert len(ENGLISH) / 4 <= estimate_tokens(ENGLISH) <= len(ENGLISH) / 2.5


RANDOM = random.Random(7)
# Tokens per character as SmolLM2's tokenizer counts them (measured with llama.cpp, vocab only):
# the local model's context check must not undercount what its engine will count.
MEASURED = {
    "digits": ("".join(RANDOM.choice("0123456789") for _ in range(3000)), 1.00),
    "base64": (base64.b64encode(RANDOM.randbytes(2250)).decode(), 0.80),
    "hex": (RANDOM.randbytes(1500).hex(), 0.89),
    "spaced-letters": (" ".join(RANDOM.choice(string.ascii_lowercase) for _ in range(1500)), 0.50),
    "cjk": (CHINESE * 20, 2.00),
    "emoji": ("😀🎉👍🔥💡" * 100, 3.00),
    "punctuation": ("!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`'\"" * 50, 0.75),
    "code": ("def f(x):\n    return {'a': [x, x+1], \"b\": x ** 2}  # comment\n" * 20, 0.48),
}


@pytest.mark.parametrize(("text", "tokens_per_char"), MEASURED.values(), ids=MEASURED.keys())
def test_token_estimate_covers_what_the_local_tokenizer_counts(text: str,
                                                               tokens_per_char: float) -> None:
    assert estimate_tokens(text) >= tokens_per_char * len(text)


HAIKU = next(c for c in MODELS if c.name == "claude-3-5-haiku-latest")
GPT4O = next(c for c in MODELS if c.name == "gpt-4o")


def test_openai_cached_prompt_tokens_cost_the_cached_rate_worked_example() -> None:
    """gpt-4o: 2,000,000 prompt tokens of which 1,500,000 cached, 400,000 completion tokens of
    which 100,000 reasoning: 500,000 x $2.50 + 1,500,000 x $1.25 + 400,000 x $10 (reasoning is
    output) = $1.25 + $1.875 + $4.00 = $7.125."""
    usage = TokenUsage(2_000_000, 400_000, cached_tokens=1_500_000, reasoning_tokens=100_000)
    assert cost(GPT4O, usage) == 7.125


def test_anthropic_cache_reads_and_writes_by_lifetime_worked_example() -> None:
    """claude-3-5-haiku: a prompt of 100,000 uncached + 300,000 read + 200,000 written for 5
    minutes + 100,000 written for an hour, 50,000 output: $0.08 + $0.024 + $0.20 + $0.16 + $0.20
    = $0.664 (input $0.80, hits $0.08, 5m writes $1.00, 1h writes $1.60, output $4.00)."""
    usage = TokenUsage(700_000, 50_000, cached_tokens=300_000, cache_write_tokens=300_000,
                       cache_write_1h_tokens=100_000)
    assert cost(HAIKU, usage) == 0.664


def test_without_a_cached_rate_cached_tokens_cost_the_input_rate() -> None:
    instruct = next(c for c in MODELS if c.name == "gpt-3.5-turbo-instruct")
    assert cost(instruct, TokenUsage(1_000_000, 0, cached_tokens=600_000)) == 1.5


def test_costs_add_up_exactly_in_decimal() -> None:
    """A million one-token requests cost exactly what one million-token request costs."""
    one = cost(MINI, TokenUsage(1, 0, cached_tokens=1))
    assert one == 0.000000075
    assert cost(MINI, TokenUsage(10**6, 0, cached_tokens=10**6)) == 0.075


def test_reservations_price_the_cached_share_only_when_told() -> None:
    assert estimate(HAIKU, 10_000, 0) == 0.008
    assert estimate(HAIKU, 10_000, 0, cached_tokens=9_000) == 0.00152  # 1,000 x $0.80 + 9,000 x $0.08
