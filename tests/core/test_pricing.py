"""Costs from the one price table."""

from __future__ import annotations

import base64
import random
import string

import pytest

from core.generation import TokenUsage
from core.pricing import cost, estimate, estimate_tokens
from models.catalog import HOSTED_MODELS, local_card

MINI = next(c for c in HOSTED_MODELS if c.name == "gpt-4o-mini")


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
