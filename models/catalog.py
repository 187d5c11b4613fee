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

    def serves(self, kind: str) -> bool:
        """Whether the model serves requests of `kind`. A local model also completes raw prompts
        (its chat template is only one way to prompt it); hosted models serve their own kind."""
        return self.kind == kind or (kind == "completion" and self.provider == "local"
                                     and self.kind == "chat")

    def calls_tools(self, need: ToolCalling) -> bool:
        """Whether the model can serve a request that needs `need` of it."""
        return TOOL_LEVELS.index(self.tool_calling) >= TOOL_LEVELS.index(need)


TOOL_LEVELS: tuple[ToolCalling, ...] = ("none", "required", "auto")


# The built-in defaults: list prices in USD per million tokens (standard tier, no batch), which the
# config file's `catalog` section extends or overrides (core/config.py CatalogConfig). Sources,
# read 2026-12-03 through the search tool (third-party copies of the providers' pages; the providers'
# own pages could not be opened from here, so each price is as verified as its source says):
# - OpenAI gpt-4o-mini, gpt-4o (input, cached input, output): developers.openai.com/api/docs/pricing
#   as tabled by chatgptpricing-akr.pages.dev/api-pricing and the openai-models crate; cached input
#   is half the input rate for the 4o family. OpenAI bills reasoning tokens as output and charges
#   nothing for cache writes. gpt-3.5-turbo-instruct and the embeddings: the seed's prices, not
#   re-verified.
# - Anthropic (input, 5-minute and 1-hour cache writes, cache hits, output):
#   docs.anthropic.com/en/docs/about-claude/pricing (Claude 3.5 Haiku, Claude Sonnet 3.5): writes
#   1.25x (5m) and 2x (1h) the input rate, hits 0.1x. Anthropic bills thinking tokens as output.
#   Minimum cacheable prompt: 1024 tokens (Sonnet), 2048 (Haiku 3.5). Anthropic lists Sonnet 3.5 as
#   deprecated: configs/serve.yaml shows its successors (Claude Haiku 4.5, Sonnet 4.5) declared in
#   the catalog section. The built-ins keep the seed's models, so that routing by tier and cost is
#   unchanged until an operator adds models.
HOSTED_MODELS: tuple[ModelCard, ...] = (
    ModelCard(name="gpt-4o-mini", provider="openai", tier="small", context_window=128_000,
              input_per_million=0.15, cached_input_per_million=0.075, output_per_million=0.60,
              aliases=("gpt-3.5-turbo",), tool_calling="auto"),
    ModelCard(name="gpt-4o", provider="openai", tier="large", context_window=128_000,
              input_per_million=2.50, cached_input_per_million=1.25, output_per_million=10.00,
              aliases=("gpt-4", "gpt-4-turbo"), tool_calling="auto"),
    ModelCard(name="claude-3-5-haiku-latest", provider="anthropic", tier="small",
              context_window=200_000, input_per_million=0.80, cached_input_per_million=0.08,
              cache_write_per_million=1.00, cache_write_1h_per_million=1.60,
              output_per_million=4.00, min_cacheable_tokens=2048, aliases=("claude-haiku",),
              tool_calling="auto"),
    ModelCard(name="claude-3-5-sonnet-latest", provider="anthropic", tier="large",
              context_window=200_000, input_per_million=3.00, cached_input_per_million=0.30,
              cache_write_per_million=3.75, cache_write_1h_per_million=6.00,
              output_per_million=15.00, aliases=("claude-sonnet",), tool_calling="auto"),
    # Legacy text completions (/v1/completions); OpenAI serves no chat model there.
    ModelCard(name="gpt-3.5-turbo-instruct", provider="openai", tier="small", kind="completion",
              context_window=4096, input_per_million=1.50, output_per_million=2.00),
    ModelCard(name="text-embedding-3-small", provider="openai", tier="small", kind="embedding",
              context_window=8191, input_per_million=0.02, output_per_million=0.0),
    ModelCard(name="text-embedding-3-large", provider="openai", tier="large", kind="embedding",
              context_window=8191, input_per_million=0.13, output_per_million=0.0),
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
