"""The built-in catalogue: current models that cover the seed's names, each price with its source and
the day it was read. (Tests that only need some model use tests/fakes/catalog.py.)"""

from __future__ import annotations

import re

import pytest

from models.catalog import HOSTED_MODELS, KEY_ENV, TIERS, ModelCard

NAMES = {name: card for card in HOSTED_MODELS for name in (card.name, *card.aliases)}


@pytest.mark.parametrize("card", HOSTED_MODELS, ids=lambda c: c.name)
def test_every_built_in_price_says_where_it_came_from_and_when(card: ModelCard) -> None:
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", card.source), card.source
    assert "read" in card.source or "verified" in card.source, card.source


@pytest.mark.parametrize(("name", "provider", "tier"), [
    # The seed's Node code names gpt-4 and text-embedding-3-small; the catalogue has always
    # offered these aliases too, and the names of the 2024 models it used to list.
    ("gpt-4", "openai", "large"), ("gpt-4-turbo", "openai", "large"),
    ("gpt-3.5-turbo", "openai", "small"), ("claude-haiku", "anthropic", "small"),
    ("claude-sonnet", "anthropic", "large"), ("gpt-4o", "openai", "large"),
    ("gpt-4o-mini", "openai", "small"), ("claude-3-5-haiku-latest", "anthropic", "small"),
    ("claude-3-5-sonnet-latest", "anthropic", "large"),
])
def test_the_seeds_names_reach_a_current_chat_model(name: str, provider: str, tier: str) -> None:
    card = NAMES[name]
    assert (card.provider, card.tier, card.kind) == (provider, tier, "chat")
    assert card.tool_calling == "auto"


def test_the_seeds_embedding_model_is_built_in() -> None:
    assert NAMES["text-embedding-3-small"].kind == "embedding"


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("provider", sorted(KEY_ENV))
def test_each_hosted_provider_offers_a_chat_model_of_each_tier(provider: str, tier: str) -> None:
    assert any(c.provider == provider and c.tier == tier and c.kind == "chat"
               for c in HOSTED_MODELS)


@pytest.mark.parametrize("card", [c for c in HOSTED_MODELS if c.kind == "chat"],
                         ids=lambda c: c.name)
def test_cache_prices_are_the_providers_kind(card: ModelCard) -> None:
    """Both discount cache reads; Anthropic bills writes (1.25x for 5 minutes, 2x for an hour),
    OpenAI does not (None: the input rate, which OpenAI never bills for a write)."""
    assert card.cached_input_per_million is not None
    assert card.cached_input_per_million < card.input_per_million
    if card.provider == "anthropic":
        assert card.cache_write_per_million == pytest.approx(1.25 * card.input_per_million)
        assert card.cache_write_1h_per_million == pytest.approx(2 * card.input_per_million)
    else:
        assert card.cache_write_per_million is card.cache_write_1h_per_million is None
