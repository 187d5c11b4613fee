"""What one request used and cost: the runs' tokens and spend (`Spend`, summed into its ledger
record) and an embedding request's use (`EmbeddingUse`). The meter (router/usage/meter.py) keeps
them."""

from __future__ import annotations

from dataclasses import dataclass

from core.generation import TokenUsage
from core.pricing import cost
from models.catalog import ModelCard
from router.usage.admission import Allowance


@dataclass
class Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    hosted_equivalent_usd: float = 0.0
    savings_usd: float = 0.0
    estimated: bool = False

    def add(self, card: ModelCard, usage: TokenUsage, baseline: ModelCard | None,
            estimated: bool = False) -> float:
        spent = cost(card, usage)
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.completion_tokens
        self.cached_input_tokens += usage.cached_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.reasoning_tokens += usage.reasoning_tokens
        self.cost_usd += spent
        if card.provider == "local" and baseline is not None:
            equivalent = cost(baseline, usage)
            self.hosted_equivalent_usd += equivalent
            self.savings_usd += equivalent - spent
        self.estimated = self.estimated or estimated
        return spent


@dataclass(frozen=True)
class EmbeddingUse:
    """What an embedding request used: the model, its tokens, cache hits and the budget held."""

    card: ModelCard
    usage: TokenUsage
    cache_hits: int
    allowance: Allowance | None
