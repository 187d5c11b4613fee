"""benchmarks/school.py's fourth part: a class's budget on the hosted fake, checked against the
ledger. A group budget worth about 10 requests' estimates, each learner capped at 4 of them; every
learner asks 8 times at once, then each in turn one request at a time until all are refused. A
refusal of the second part is false when its level (the group's budget, or the learner's cap) had
room in the ledger for one more estimate; the group's spend in the ledger is compared with its
budget (the goal: overrun by at most one estimate)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import httpx

from core.generation import GenerationParams
from core.pricing import estimate, prompt_estimate
from models.catalog import HOSTED_MODELS
from tests.fakes import FakeOpenAI
from tests.fakes.base import Reply

BUDGET_GROUP = "class-budget"
ASK = [{"role": "user", "content": "Explain why the membrane grows before a cell divides."}]
ASK_TOKENS = 50


def one_estimate(model: str) -> tuple[int, float]:
    """A budget request's prompt estimate and cost estimate (its hold: every allowed token)."""
    card = next(c for c in HOSTED_MODELS if c.name == model)
    prompt = prompt_estimate(GenerationParams(ASK, ASK_TOKENS))
    return prompt, estimate(card, prompt, ASK_TOKENS)


def budget_level(model: str) -> dict[str, Any]:
    """The class's budget: about 10 requests' estimates, a learner's cap 4."""
    each = one_estimate(model)[1]
    return {"tenant": "school", "group": BUDGET_GROUP, "usd": 10.5 * each, "period": "day",
            "on_exhausted": "refuse", "learner_cap_usd": 4.5 * each}


async def budget_class(url: str, fake: FakeOpenAI, api_key: str, count: int,
                       model: str = "gpt-4o-mini") -> None:
    """Every learner asks 8 times at once, then each in turn one request at a time until every
    one is refused; each refusal of the second part checked against the ledger."""
    prompt, each = one_estimate(model)
    level = budget_level(model)
    rng = random.Random(402)
    fake.reset()  # answers shorter than their estimate, as most are: how many fit is not fixed
    fake.enqueue(*(Reply(prompt_tokens=prompt, completion_tokens=rng.randint(5, ASK_TOKENS))
                   for _ in range(40 * count)))
    learners = [f"learner-{n}" for n in range(count)]
    sent = 0
    async with httpx.AsyncClient(headers={"X-API-Key": api_key}, timeout=120,
                                 limits=httpx.Limits(max_connections=100)) as client:
        async def ask(learner: str) -> httpx.Response:
            nonlocal sent
            sent += 1
            return await client.post(f"{url}/v1/chat/completions", json={
                "model": model, "messages": ASK, "max_tokens": ASK_TOKENS, "user": learner,
                "group": BUDGET_GROUP})

        async def spent(user: str | None = None) -> float:
            """The ledger's spend of the group (or of one learner in it), once it holds every
            request sent."""
            for _ in range(100):
                totals = (await client.get(f"{url}/api/v1/ai/usage", params={
                    "group": BUDGET_GROUP, **({"user_id": user} if user else {})})).json()["totals"]
                if user or totals["requests"] == sent:
                    return float(totals["cost_usd"])
                await asyncio.sleep(0.1)
            raise RuntimeError("the ledger never caught up")

        burst = await asyncio.gather(*(ask(learner) for learner in learners for _ in range(8)))
        statuses = [r.status_code for r in burst]
        levels = Counter(r.json()["error"].get("level") for r in burst if r.status_code == 402)
        after_burst = await spent()
        checked, false, refused = 0, 0, set[str]()
        while len(refused) < len(learners) and checked < 20 * len(learners):
            for learner in learners:
                if learner in refused:
                    continue
                response = await ask(learner)
                checked += 1
                if response.status_code != 402:
                    continue
                refused.add(learner)
                which = response.json()["error"].get("level")
                room = level["usd"] - await spent()  # the group's, once the ledger has all
                if which != "group":  # the learner's share
                    room = level["learner_cap_usd"] - await spent(learner)
                false += room >= each  # it had room for one more estimate
        total = await spent()
    print(f"  the burst: {len(burst)} requests of {len(learners)} learners at once, "
          f"{statuses.count(200)} served, {statuses.count(402)} refused (402: {dict(levels)}), other "
          f"{len(statuses) - statuses.count(200) - statuses.count(402)}; the group's ledger spend "
          f"then {after_burst / level['usd']:.1%} of its budget")
    print(f"  one at a time until every learner is refused: {checked} requests, "
          f"{len(refused)} refusals checked against the ledger, **{false} false**")
    print(f"  the group's budget ${level['usd']:.8f} (one estimate ${each:.8f}): ledger spend "
          f"${total:.8f}, overrun **{max(0.0, total - level['usd']) / each:.2f} estimates** "
          f"(at most 1 allowed); left {max(0.0, level['usd'] - total) / each:.2f} estimates")
