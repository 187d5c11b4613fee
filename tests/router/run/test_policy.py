"""The routing policy, a pure function: no network, no Serve."""

from __future__ import annotations

import pytest

from core.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from models.catalog import local_card
from router.run.policy import PolicySettings, RouteRequest, rank
from tests.fakes.catalog import MODELS

CATALOG = [local_card("smollm2-135m", 4096), *MODELS]
ALL = {"local", "openai", "anthropic"}
COST = PolicySettings(cost_optimization=True)


def names(model: str, available=frozenset(ALL), settings=COST, prompt=100, max_tokens=200,
          preferred: tuple[str, ...] = ()) -> list[str]:
    ranked = rank(RouteRequest(model, prompt, max_tokens, preferred), CATALOG, set(available),
                  settings)
    return [c.card.name for c in ranked]


def test_concrete_model_first_then_its_tier_equivalents_by_cost() -> None:
    assert names("claude-3-5-haiku-latest") == [
        "claude-3-5-haiku-latest", "smollm2-135m", "gpt-4o-mini"]


def test_alias_counts_as_the_concrete_model() -> None:
    assert names("gpt-4")[0] == "gpt-4o"


def test_tier_with_cost_optimization_picks_the_cheapest() -> None:
    assert names("small") == ["smollm2-135m", "gpt-4o-mini", "claude-3-5-haiku-latest"]
    assert names("large") == ["gpt-4o", "claude-3-5-sonnet-latest"]


def test_without_cost_optimization_the_default_provider_leads() -> None:
    settings = PolicySettings(default_provider="anthropic", cost_optimization=False)
    assert names("small", settings=settings)[0] == "claude-3-5-haiku-latest"
    assert names("small", settings=PolicySettings(cost_optimization=False))[0] == "smollm2-135m"


def test_default_provider_breaks_cost_ties() -> None:
    free = [local_card("smollm2-135m", 4096),
            MODELS[0].model_copy(update={"input_per_million": 0, "output_per_million": 0})]
    ranked = rank(RouteRequest("small", 10, 10), free, ALL,
                  PolicySettings(default_provider="openai", cost_optimization=True))
    assert ranked[0].card.provider == "openai"


def test_preferred_providers_beat_cost_and_keep_their_order() -> None:
    assert names("small", preferred=("anthropic", "openai")) == [
        "claude-3-5-haiku-latest", "gpt-4o-mini", "smollm2-135m"]


def test_provider_without_key_is_never_a_candidate() -> None:
    assert names("gpt-4o-mini", available={"local", "anthropic"}) == [
        "smollm2-135m", "claude-3-5-haiku-latest"]


def test_prompt_longer_than_a_context_drops_that_model() -> None:
    assert "smollm2-135m" not in names("small", prompt=5000)


def test_prompt_longer_than_every_context_is_the_callers_error() -> None:
    with pytest.raises(InvalidRequest, match="does not fit any small model"):
        names("small", prompt=500_000)


def test_no_provider_for_the_tier_is_unavailable_and_says_what_to_set() -> None:
    with pytest.raises(ModelUnavailable, match="OPENAI_API_KEY"):
        names("gpt-4o", available={"local"})


def test_unknown_model() -> None:
    with pytest.raises(ModelNotFound, match="gpt-9"):
        names("gpt-9")


def test_reasons_explain_the_choice() -> None:
    ranked = rank(RouteRequest("gpt-4o-mini", 10, 10), CATALOG, {"local", "anthropic"}, COST)
    assert ranked[0].reason == "lowest estimated cost in tier small; gpt-4o-mini unavailable"
    assert rank(RouteRequest("gpt-4", 10, 10), CATALOG, ALL, COST)[0].reason == "alias 'gpt-4'"


def test_estimated_cost_uses_prompt_and_max_tokens() -> None:
    (mini,) = [c for c in rank(RouteRequest("gpt-4o-mini", 100_000, 1_000_000), CATALOG,
                               {"openai"}, COST) if c.card.name == "gpt-4o-mini"]
    assert mini.estimated_cost == pytest.approx(0.1 * 0.15 + 0.60)


def completions(model: str) -> list[str]:
    ranked = rank(RouteRequest(model, 100, 200, kind="completion"), CATALOG, ALL, COST)
    return [c.card.name for c in ranked]


def test_a_raw_prompt_goes_to_local_models_and_completion_models_only() -> None:
    assert completions("small") == ["smollm2-135m", "gpt-3.5-turbo-instruct"]
    assert completions("gpt-3.5-turbo-instruct") == ["gpt-3.5-turbo-instruct", "smollm2-135m"]
    assert "gpt-3.5-turbo-instruct" not in names("small")


@pytest.mark.parametrize("model, kind, problem", [
    ("gpt-4o-mini", "completion", "is a chat model"),
    ("gpt-3.5-turbo-instruct", "chat", "is a completion model"),
    ("text-embedding-3-small", "chat", "is an embedding model"),
])
def test_a_model_of_another_kind_is_named_as_such(model: str, kind: str, problem: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        rank(RouteRequest(model, 100, 200, kind=kind), CATALOG, ALL, COST)
    assert f"'{model}' {problem}, not served by this endpoint" in raised.value.message


def tool_names(model: str, need: str, available=frozenset(ALL)) -> list[str]:
    ranked = rank(RouteRequest(model, 100, 200, tool_calling=need), CATALOG,  # type: ignore[arg-type]
                  set(available), COST)
    return [c.card.name for c in ranked]


def test_a_required_tool_call_may_go_to_the_local_model_an_auto_one_may_not() -> None:
    assert tool_names("small", "required")[0] == "smollm2-135m"
    assert tool_names("small", "auto") == ["gpt-4o-mini", "claude-3-5-haiku-latest"]
    assert tool_names("smollm2", "none")[0] == "smollm2-135m"


def test_the_reason_says_why_a_named_model_was_passed_over_for_tools() -> None:
    ranked = rank(RouteRequest("smollm2-135m", 100, 200, tool_calling="auto"), CATALOG, ALL, COST)
    assert ranked[0].reason == ("lowest estimated cost in tier small; smollm2-135m cannot serve "
                                "tool_choice 'auto'")


def test_auto_tools_without_a_capable_provider_is_a_503_naming_what_to_do() -> None:
    with pytest.raises(ModelUnavailable, match="configure a hosted provider") as raised:
        tool_names("small", "auto", available={"local"})
    assert "smollm2-135m (calls tools only when tool_choice is 'required'" in raised.value.message


def test_a_tier_whose_models_cannot_call_tools_at_all_is_the_callers_400() -> None:
    only_local = [local_card("smollm2-135m", 4096)]
    with pytest.raises(InvalidRequest) as raised:
        rank(RouteRequest("small", 10, 10, tool_calling="auto"), only_local, ALL, COST)
    assert raised.value.param == "tool_choice"
    textless = [local_card("smollm2-135m", 4096, tool_calling="none")]
    with pytest.raises(InvalidRequest, match="'required' or a named function"):
        rank(RouteRequest("small", 10, 10, tool_calling="required"), textless, ALL, COST)
