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


def estimate_tokens(text: str) -> int:
    """Tokens in `text` without the provider's tokenizer, on the high side so that a reservation
    covers what the provider will count: one per 3 ASCII characters (English prose runs about 4,
    code and numbers about 3) and one per 2 bytes of other UTF-8 (Chinese runs about 1 to 1.5
    tokens per 3-byte character; Arabic, Cyrillic, Devanagari about 1 per character or less).
    Characters / 4 undercounted such text 3-4x. Local models report their exact count."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return -(-(2 * ascii_chars + 3 * other_bytes) // 6)
