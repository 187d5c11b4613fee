"""Costs from the one price table."""

from __future__ import annotations

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
    assert estimate_tokens(0) == 0
    assert estimate_tokens(1) == 1
    assert estimate_tokens(8) == 2
