"""The model catalogue: every concrete model the router can use, with its provider, context window,
capability tier and price. It is the one price table; core/pricing.py computes costs from it.

Models of the same tier are equivalents (the seed's "model mapping"): a request for one may be served
by another of its tier when the first is unavailable or more expensive."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from models.registry import LOCAL_MODELS, Tier, ToolCalling

ProviderName = Literal["local", "openai", "anthropic"]
PROVIDERS: tuple[ProviderName, ...] = get_args(ProviderName)
# Each hosted provider and the environment variable that holds its key (keys come only from the
# environment). A new provider is one entry here, its literal above and its cards below, and one
# entry in router/run/providers/__init__.py: HOSTED (tests/router/run/providers/test_registry.py).
KEY_ENV: dict[ProviderName, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
TIERS: tuple[Tier, ...] = ("small", "large")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    provider: ProviderName
    tier: Tier
    context_window: int = Field(gt=0)
    input_per_million: float = Field(ge=0)  # USD per 1M prompt tokens
    output_per_million: float = Field(ge=0)  # USD per 1M completion tokens
    # USD per 1M prompt tokens read from the provider's prompt cache; None: no discount.
    cached_input_per_million: float | None = Field(None, ge=0)
    # USD per 1M prompt tokens written to the cache, kept 5 minutes / an hour; None: the input rate.
    cache_write_per_million: float | None = Field(None, ge=0)
    cache_write_1h_per_million: float | None = Field(None, ge=0)
    # USD per 1M reasoning tokens, where billed apart from output; None: the output rate (as
    # OpenAI and Anthropic bill them).
    reasoning_per_million: float | None = Field(None, ge=0)
    # The shortest prompt prefix the provider caches, in tokens (OpenAI: 1024; Anthropic: per model).
    min_cacheable_tokens: int = Field(1024, gt=0)
    aliases: tuple[str, ...] = ()
    kind: Literal["chat", "completion", "embedding"] = "chat"
    tool_calling: ToolCalling = "none"
    # Where the prices came from and when (a page and a date): prices go stale, and whoever
    # checks the bill needs to know against what.
    source: str = ""

    def serves(self, kind: str) -> bool:
        """Whether the model serves requests of `kind`. A local model also completes raw prompts
        (its chat template is only one way to prompt it); hosted models serve their own kind."""
        return self.kind == kind or (kind == "completion" and self.provider == "local"
                                     and self.kind == "chat")

    def calls_tools(self, need: ToolCalling) -> bool:
        """Whether the model can serve a request that needs `need` of it."""
        return TOOL_LEVELS.index(self.tool_calling) >= TOOL_LEVELS.index(need)


TOOL_LEVELS: tuple[ToolCalling, ...] = ("none", "required", "auto")


# The built-in defaults, which the config file's `catalog` section extends or overrides
# (core/config.py CatalogConfig): models the providers sell today that the adapters serve as
# written (router/run/providers/), at their list prices in USD per million tokens (standard tier,
# no batch, no data-residency uplift), each card naming its source and when it was read. The
# providers' own pages could not be opened from here; each was read through the search tool on
# 2026-12-04 (Anthropic's own pricing and model pages; OpenAI's pricing page as copied by third
# parties, named in each card). Left out on purpose, until the adapters learn their rules:
# Claude Sonnet 5 / 5.5 and Haiku 5.5 (they refuse a non-default temperature, which every request
# sends, and 5.5 refuses the forced tool call that structured output uses; Haiku 5.5 also bills a
# prompt over 100,000 tokens at 5x, which one card cannot say) and OpenAI's GPT-5.x / GPT-6
# reasoning models (temperature; long-context tariffs above 272K). Declare them in the config once
# the adapters handle them. Both providers bill reasoning (thinking) tokens as output, and OpenAI
# charges nothing for cache writes, so those fields stay None. The seed's aliases (gpt-4,
# gpt-3.5-turbo, claude-haiku, claude-sonnet) and the names of the 2024 models these cards replace
# point at their successors, so a caller naming an old model is served (and billed) by the new one.
_ANTHROPIC_PRICING = "platform.claude.com/docs/en/about-claude/pricing, read 2026-12-04"
_OPENAI_PRICING = ("developers.openai.com/api/docs/pricing as read on 2026-11-05 by "
                   "api-evangelist/posts (2026-11-06), prices as tabled by {}; read 2026-12-04")
HOSTED_MODELS: tuple[ModelCard, ...] = (
    ModelCard(name="gpt-4o-mini", provider="openai", tier="small", context_window=128_000,
              input_per_million=0.15, cached_input_per_million=0.075, output_per_million=0.60,
              aliases=("gpt-3.5-turbo",), tool_calling="auto",
              source=_OPENAI_PRICING.format("Sraleik/undetermini PRICING.md (verified 2026-05-07)")),
    ModelCard(name="gpt-4.1-mini", provider="openai", tier="small", context_window=1_047_576,
              input_per_million=0.40, cached_input_per_million=0.10, output_per_million=1.60,
              tool_calling="auto",
              source=_OPENAI_PRICING.format("explore.oreate.ai (April 2026) and aitoolrank.net")),
    ModelCard(name="gpt-4.1", provider="openai", tier="large", context_window=1_047_576,
              input_per_million=2.00, cached_input_per_million=0.50, output_per_million=8.00,
              aliases=("gpt-4", "gpt-4-turbo", "gpt-4o"), tool_calling="auto",
              source=_OPENAI_PRICING.format("ShellPilot's PriceTable.psd1 (effective 2026-06-01)")),
    # Minimum cacheable prompt: 4096 tokens (Anthropic's prompt-caching docs, as quoted in
    # anthropics/anthropic-sdk-python issue 1194).
    ModelCard(name="claude-haiku-4-5", provider="anthropic", tier="small", context_window=200_000,
              input_per_million=1.00, cached_input_per_million=0.10,
              cache_write_per_million=1.25, cache_write_1h_per_million=2.00,
              output_per_million=5.00, min_cacheable_tokens=4096,
              aliases=("claude-haiku", "claude-3-5-haiku-latest"), tool_calling="auto",
              source=_ANTHROPIC_PRICING),
    # Anthropic lists it as legacy (Sonnet 5.5 is current; see above) but still sells it. Its
    # context is 1M; the card stops at 200K, where earlier Sonnets' long-context rates began, so
    # every prompt it takes is priced at these rates. Minimum cacheable prompt: 1024 tokens.
    ModelCard(name="claude-sonnet-4-6", provider="anthropic", tier="large", context_window=200_000,
              input_per_million=3.00, cached_input_per_million=0.30,
              cache_write_per_million=3.75, cache_write_1h_per_million=6.00,
              output_per_million=15.00, min_cacheable_tokens=1024,
              aliases=("claude-sonnet", "claude-3-5-sonnet-latest"), tool_calling="auto",
              source=_ANTHROPIC_PRICING),
    # Legacy text completions (/v1/completions); OpenAI serves no chat model there.
    ModelCard(name="gpt-3.5-turbo-instruct", provider="openai", tier="small", kind="completion",
              context_window=4096, input_per_million=1.50, output_per_million=2.00,
              source="OpenAI API's price as listed by llmreference.com (refreshed 2026-05-22) "
                     "and switchy.build (verified 2026-04-23); read 2026-12-04"),
    ModelCard(name="text-embedding-3-small", provider="openai", tier="small", kind="embedding",
              context_window=8191, input_per_million=0.02, output_per_million=0.0,
              source="developers.openai.com/api/docs/models/text-embedding-3-small as tabled by "
                     "tokenprice.fyi (effective 2026-07-03); read 2026-12-04"),
    ModelCard(name="text-embedding-3-large", provider="openai", tier="large", kind="embedding",
              context_window=8191, input_per_million=0.13, output_per_million=0.0,
              source="OpenAI's pricing page as tabled by embeddingcost.com (verified May 2026); "
                     "read 2026-12-04"),
)


def local_card(name: str, context_window: int, input_per_million: float = 0.0,
               output_per_million: float = 0.0, tool_calling: ToolCalling | None = None
               ) -> ModelCard:
    """A served local model: registry facts, the deployed context size, an amortized price, and
    how it calls tools (the registry's answer unless its deployment says better)."""
    spec = next(s for s in LOCAL_MODELS if s.name == name)
    return ModelCard(name=spec.name, provider="local", tier=spec.tier,
                     context_window=min(context_window, spec.context_window),
                     input_per_million=input_per_million, output_per_million=output_per_million,
                     aliases=spec.aliases, tool_calling=tool_calling or spec.tool_calling)
