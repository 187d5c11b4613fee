"""Cost in USD, from the catalogue's prices: estimated before a call, exact from real usage after."""

from __future__ import annotations

import re

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
    (and the local models' context check) covers what a tokenizer will count, by kind of run:
    a word of letters one per 3 characters (English runs about 4 to 5), in mixed or upper case one
    per 2; a run with digits (numbers, hex, base64) one per character, as small models split
    digits; ASCII punctuation one each; whitespace other than one space one per 3; other UTF-8
    3 per 4 bytes (Chinese takes 1 to 2 tokens a character, an emoji up to 3). Measured with
    SmolLM2's tokenizer, chars/3 undercounted digits 3x and base64 2.4x; this covers them."""
    ascii_text = text.encode("ascii", "ignore").decode("ascii")
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - len(ascii_text)
    words = _WORD.findall(ascii_text)
    spaces = _SPACE.findall(ascii_text)
    symbols = len(ascii_text) - sum(map(len, words)) - sum(map(len, spaces))
    return (sum(map(_word_tokens, words)) + sum(0 if s == " " else -(-len(s) // 3) for s in spaces)
            + symbols + -(-3 * other_bytes // 4))


_WORD = re.compile(r"[A-Za-z0-9]+")
_SPACE = re.compile(r"\s+", re.ASCII)


def _word_tokens(word: str) -> int:
    if not word.isalpha():
        return len(word)
    return -(-len(word) // (3 if word.islower() or word.istitle() else 2))
