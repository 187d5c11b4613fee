"""Cost in USD, from the catalogue's prices: estimated before a call, exact from real usage after."""

from __future__ import annotations

from core.generation import TokenUsage
from models.catalog import ModelCard

_PER = 1_000_000


def cost(card: ModelCard, usage: TokenUsage) -> float:
    """What a finished request cost, from the provider's own token counts."""
    return round((usage.prompt_tokens * card.input_per_million
                  + usage.completion_tokens * card.output_per_million) / _PER, 10)


def estimate(card: ModelCard, prompt_tokens: int, max_tokens: int) -> float:
    """Upper-bound estimate before the call: the whole prompt and every allowed output token."""
    return cost(card, TokenUsage(prompt_tokens, max_tokens))


def estimate_tokens(text_chars: int) -> int:
    """Prompt size without the provider's tokenizer: ~4 characters per token, rounded up."""
    return -(-text_chars // 4)
