"""The tests' own hosted models: what the fakes serve, at prices frozen here, so that a test that only
needs some model (and the worked examples priced by hand) does not change when the built-in
catalogue (models/catalog.py) follows the providers. They keep the names and 2024 list prices the
tests were written against; they are not the built-ins. Every app the tests build offers exactly
these (`CATALOG`, the config's catalog section with the built-ins off); tests of the built-ins
themselves read models/catalog.py."""

from __future__ import annotations

from typing import Any

from models.catalog import ModelCard

SOURCE = "tests/fakes/catalog.py: frozen for the tests"

MODELS: tuple[ModelCard, ...] = (
    ModelCard(name="gpt-4o-mini", provider="openai", tier="small", context_window=128_000,
              input_per_million=0.15, cached_input_per_million=0.075, output_per_million=0.60,
              aliases=("gpt-3.5-turbo",), tool_calling="auto", source=SOURCE),
    ModelCard(name="gpt-4o", provider="openai", tier="large", context_window=128_000,
              input_per_million=2.50, cached_input_per_million=1.25, output_per_million=10.00,
              aliases=("gpt-4", "gpt-4-turbo"), tool_calling="auto", source=SOURCE),
    ModelCard(name="claude-3-5-haiku-latest", provider="anthropic", tier="small",
              context_window=200_000, input_per_million=0.80, cached_input_per_million=0.08,
              cache_write_per_million=1.00, cache_write_1h_per_million=1.60,
              output_per_million=4.00, min_cacheable_tokens=2048, aliases=("claude-haiku",),
              tool_calling="auto", source=SOURCE),
    ModelCard(name="claude-3-5-sonnet-latest", provider="anthropic", tier="large",
              context_window=200_000, input_per_million=3.00, cached_input_per_million=0.30,
              cache_write_per_million=3.75, cache_write_1h_per_million=6.00,
              output_per_million=15.00, aliases=("claude-sonnet",), tool_calling="auto",
              source=SOURCE),
    ModelCard(name="gpt-3.5-turbo-instruct", provider="openai", tier="small", kind="completion",
              context_window=4096, input_per_million=1.50, output_per_million=2.00,
              source=SOURCE),
    ModelCard(name="text-embedding-3-small", provider="openai", tier="small", kind="embedding",
              context_window=8191, input_per_million=0.02, output_per_million=0.0, source=SOURCE),
    ModelCard(name="text-embedding-3-large", provider="openai", tier="large", kind="embedding",
              context_window=8191, input_per_million=0.13, output_per_million=0.0, source=SOURCE),
)
CARDS: dict[str, ModelCard] = {c.name: c for c in MODELS}
# The config's catalog section that offers exactly these (JSON-shaped, for Serve's args too).
CATALOG: dict[str, Any] = {"builtins": False,
                           "models": [c.model_dump(mode="json", exclude_defaults=True)
                                      for c in MODELS]}
