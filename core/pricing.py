"""Cost in USD, from the catalogue's prices: estimated before a call, exact from real usage after."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from core.generation import GenerationParams, TokenUsage
from models.catalog import ModelCard

_PER = Decimal(1_000_000)
_PLACES = Decimal("1e-10")


def cost(card: ModelCard, usage: TokenUsage) -> float:
    """What a finished request cost, from the provider's own token counts: each kind of token at
    its own rate (prompt tokens read from the cache, written to it for 5 minutes or an hour, the
    rest of the prompt; reasoning where billed apart, the rest of the completion), summed exactly
    in decimal and rounded to 1e-10 USD."""
    writes_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    usd = (_usd(usage.uncached_prompt_tokens, card.input_per_million)
           + _usd(usage.cached_tokens, _rate(card.cached_input_per_million, card.input_per_million))
           + _usd(usage.cache_write_tokens - writes_1h,
                  _rate(card.cache_write_per_million, card.input_per_million))
           + _usd(writes_1h, _rate(card.cache_write_1h_per_million, card.input_per_million))
           + _usd(usage.completion_tokens - reasoning, card.output_per_million)
           + _usd(reasoning, _rate(card.reasoning_per_million, card.output_per_million)))
    return float(usd.quantize(_PLACES))


def _rate(price: float | None, otherwise: float) -> float:
    return otherwise if price is None else price


def _usd(tokens: int, per_million: float) -> Decimal:
    return Decimal(tokens) * Decimal(str(per_million)) / _PER


def estimate(card: ModelCard, prompt_tokens: int, max_tokens: int, cached_tokens: int = 0) -> float:
    """Upper-bound estimate before the call: the whole prompt and every allowed output token;
    `cached_tokens` of the prompt at the cached rate, only where the cache is known to hold them."""
    return cost(card, TokenUsage(prompt_tokens, max_tokens, cached_tokens=cached_tokens))


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


TOOL_PROMPT_TOKENS = 400  # what a provider adds to a prompt with tools (Anthropic: 313-346)


def prompt_estimate(params: GenerationParams) -> int:
    """The prompt's tokens, on the high side (estimate_tokens), with 4 per message for
    the chat format's role markers; tool calls, tool definitions and the JSON schema count as their
    JSON, and tools (a schema is one at Anthropic) as the system prompt providers add for them."""
    raw = estimate_tokens(params.prompt) if params.prompt is not None else 0
    messages = sum(estimate_tokens(m["content"] or "") + 4 for m in params.messages)
    calls = [m["tool_calls"] for m in params.messages if m.get("tool_calls")]
    tools = [(t.name, t.description, t.parameters) for t in params.tools]
    schema = params.json_schema or None
    extra = [calls, tools, schema] if calls or tools or schema else None
    tooled = TOOL_PROMPT_TOKENS if tools or schema else 0
    return raw + messages + (estimate_tokens(json.dumps(extra)) + tooled if extra else 0)
