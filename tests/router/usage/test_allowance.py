"""A run's budget hold (Allowance, the run's BudgetGate) over scripted providers: before every
attempt (the first, a fallback, a retry, a continuation after a cut) the hold covers what the run has
spent so far plus that attempt's estimate, in the periods the request was admitted in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from core.breakers import Breakers, BreakerSettings
from core.budget_config import BudgetConfig, BudgetsConfig
from core.config import ApiKeyConfig, RouterConfig
from core.errors import BudgetExceeded, ProviderError
from core.generation import GenerationParams
from core.pricing import estimate, prompt_estimate
from models.catalog import ModelCard, local_card
from router.run.attempts import Route
from router.run.fallback import Run, continuation
from router.run.policy import Candidate
from router.usage.admission import Allowance, Caller
from router.usage.budget_stores import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from router.usage.budgets import Budgets
from router.usage.scopes import Scope, to_nano
from router.usage.sharedstate import SharedState
from tests.conftest import free_port
from tests.fakes.catalog import MODELS
from tests.fakes.clock import Clock
from tests.fakes.scripted import Cut, Say, ScriptedProvider

CARDS = {c.name: c for c in MODELS}
MINI, HAIKU = CARDS["gpt-4o-mini"], CARDS["claude-3-5-haiku-latest"]
PARAMS = GenerationParams([{"role": "user", "content": "Explain tides. " * 30}], max_tokens=100)
KEY = ApiKeyConfig(id="svc", sha256="0" * 64)


def first_estimate(card: ModelCard, params: GenerationParams = PARAMS) -> float:
    return estimate(card, prompt_estimate(params), params.max_tokens)


@dataclass
class Checked:
    """The Allowance, with the hold checked after every attempt it lets through."""

    allowance: Allowance
    asked: list[tuple[float, float, str | None]] = field(default_factory=list)

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        refusal = await self.allowance.refusal(spent_usd, next_usd)
        self.asked.append((spent_usd, next_usd, refusal))
        if refusal is None:
            held = self.allowance.hold.amount if self.allowance.hold else 0
            assert held >= to_nano(spent_usd + next_usd)
        return refusal

    def exceeded(self, message: str) -> BudgetExceeded:
        return self.allowance.exceeded(message)


def run_over(*steps: tuple[ScriptedProvider, ModelCard], gate: Checked, retries: int = 0) -> Run:
    routes = [Route(provider, Candidate(card, first_estimate(card), "test"))
              for provider, card in steps]
    config = RouterConfig(max_retries=retries, retry_backoff_s=0)
    return Run(routes, config, Breakers(BreakerSettings()), budget=gate)


async def gated(daily_usd: float, store: BudgetStore | None = None,
                clock: Clock | None = None) -> tuple[Checked, Budgets]:
    """A gate holding the first candidate's estimate, as the meter does before a run."""
    budgets = Budgets(BudgetsConfig(users={"u1": BudgetConfig(daily_usd=daily_usd)}),
                      store or MemoryBudgetStore(), clock=clock or time.time)
    caller = Caller(KEY, "u1", "r1", clock() if clock else time.time())
    return Checked(Allowance(budgets, caller)), budgets


async def test_a_fallback_is_covered_with_what_the_failed_attempt_spent() -> None:
    gate, _ = await gated(daily_usd=1.0)
    openai, anthropic = ScriptedProvider("openai", [Cut("one two three four ")]), \
        ScriptedProvider("anthropic")
    run = run_over((openai, MINI), (anthropic, HAIKU), gate=gate)
    await run.complete(PARAMS)
    (_, first, _), (spent, second, refusal) = gate.asked
    assert first == pytest.approx(first_estimate(MINI))
    assert refusal is None
    assert spent == run.report().charges[0].cost_usd > 0  # the cut attempt's tokens
    # The continuation: the original prompt, the text so far and the request to go on.
    assert second == pytest.approx(first_estimate(HAIKU, continuation(PARAMS, "one two three four ")))
    assert anthropic.calls[0][1].messages[-2]["content"] == "one two three four "


async def test_a_fallback_that_the_budget_cannot_cover_with_the_spend_so_far_is_skipped() -> None:
    """The budget covers the costlier candidate's estimate alone, not with what the first spent."""
    openai, anthropic = ScriptedProvider("openai", [Cut("one ")]), ScriptedProvider("anthropic")
    budget = first_estimate(HAIKU)
    gate, budgets = await gated(daily_usd=budget)
    run = run_over((openai, MINI), (anthropic, HAIKU), gate=gate)
    with pytest.raises(BudgetExceeded, match=r"\(over budget\)"):  # a 402: the budget's doing
        await run.complete(PARAMS)
    assert anthropic.calls == []
    hold = gate.allowance.hold
    assert hold is not None
    await budgets.settle(hold, run.report().cost_usd)
    assert (await budgets.status(Scope("svc", "u1")))["daily_spent_usd"] <= budget


async def test_retries_of_the_last_candidate_are_covered_too() -> None:
    budget = first_estimate(HAIKU)
    gate, _ = await gated(daily_usd=budget)
    anthropic = ScriptedProvider("anthropic", [Cut("one "), Say()])
    run = run_over((anthropic, HAIKU), gate=gate, retries=2)
    with pytest.raises(BudgetExceeded, match=r"\(over budget\)"):
        await run.complete(PARAMS)
    assert len(anthropic.calls) == 1  # the retry would spend past the budget: not made
    assert [refusal for *_, refusal in gate.asked] == [None, "over budget"]


async def test_a_retry_the_budget_covers_tops_the_hold_up_first() -> None:
    gate, _ = await gated(daily_usd=1.0)
    down = ProviderError("HTTP 503", provider="anthropic", model=HAIKU.name, upstream_status=503)
    anthropic = ScriptedProvider("anthropic", [Cut("one two "), down, Say()])
    run = run_over((anthropic, HAIKU), gate=gate, retries=2)
    completion, _ = await run.complete(PARAMS)
    assert completion.text == "one two " + Say().text
    assert len(gate.asked) == 3  # every attempt was covered before it was made
    hold = gate.allowance.hold
    spent, following, _ = gate.asked[-1]
    assert hold is not None and hold.amount >= to_nano(spent + following)


async def test_a_fallback_after_midnight_tops_up_the_day_the_request_was_admitted() -> None:
    clock = Clock.at_utc("2026-11-25 23:59:59")
    gate, budgets = await gated(daily_usd=0.01, clock=clock)
    assert await gate.allowance.cover(first_estimate(MINI))
    clock.set_utc("2026-11-26 00:00:01")
    openai, anthropic = ScriptedProvider("openai", [Cut("one two ")]), ScriptedProvider("anthropic")
    run = run_over((openai, MINI), (anthropic, HAIKU), gate=gate)
    await run.complete(PARAMS)
    hold = gate.allowance.hold
    assert hold is not None and [c.key for c in hold.counters] == ["svc\x1fu1:d:2026-11-25"]
    await budgets.settle(hold, run.report().cost_usd)
    assert (await budgets.status(Scope("svc", "u1")))["daily_spent_usd"] == 0.0  # today: untouched
    clock.set_utc("2026-11-25 23:00:00")
    assert (await budgets.status(Scope("svc", "u1")))["daily_spent_usd"] == pytest.approx(
        run.report().cost_usd, abs=1e-9)


async def test_an_unavailable_budget_store_skips_paid_candidates_and_says_so() -> None:
    state = SharedState.connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        gate, _ = await gated(daily_usd=1.0, store=RedisBudgetStore(state))
        anthropic, local = ScriptedProvider("anthropic"), ScriptedProvider("local")
        run = run_over((anthropic, HAIKU), (local, local_card("smollm2-135m", 2048)), gate=gate)
        await run.complete(PARAMS)  # the free model needs no budget
        assert anthropic.calls == []
        assert run.report().path[0].endswith("(skipped: budget store unavailable)")
    finally:
        await state.client.aclose()
