"""The vocabulary of a request's journey, shared by chat, content, fallback and the meter: a route (a
provider and the policy's candidate), each attempt made on one, and the report of a whole run."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from core.errors import ProviderError, ServiceError
from core.generation import Delta, TokenUsage
from core.pricing import cost, estimate_tokens
from models.catalog import ModelCard
from router.run.policy import Candidate
from router.run.providers.base import Provider


@dataclass(frozen=True)
class Route:
    provider: Provider
    candidate: Candidate

    @property
    def model(self) -> str:
        return self.candidate.card.name

    @property
    def card(self) -> ModelCard:
        return self.candidate.card

    def header(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(frozen=True)
class Switch:
    """Emitted in a stream where a failed candidate hands over to the next one, which continues the
    text so far, or with `restart` (a JSON answer) starts over: the text so far is void."""

    from_route: str
    to_route: str
    error: str
    restart: bool = False


@dataclass
class Attempt:
    route: Route
    prompt_estimate: int = 0
    error: ServiceError | None = None
    skipped: str | None = None  # why the candidate was not called
    usage: TokenUsage | None = None  # the provider's own count, when it reported one
    finished: bool = False  # the answer reached its finish_reason
    waited_out: bool = False  # the router stopped waiting for its first token
    probe: bool = False  # the call holds its breaker's half-open probe (or a closed breaker's pass)
    tokens: int = 0  # generated so far, as counted by the provider per delta
    uncounted: list[str] = field(default_factory=list)  # generated text (and calls) uncounted
    first_token_at: float | None = None  # time.perf_counter() of the first delta

    def count(self, delta: Delta) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if delta.tokens is not None:
            self.tokens += delta.tokens
        else:  # a tool call's name and arguments are generated tokens too
            self.uncounted.append(delta.text + "".join(f"{c.name or ''}{c.arguments}"
                                                       for c in delta.tool_calls))

    def billed(self) -> TokenUsage:
        """The provider's usage, or for an attempt without it (finished without a usage report,
        failed, client gone): what the provider reported before failing (it bills that prompt),
        else the prompt (estimated) and the tokens counted so far, when the provider took the
        prompt: it finished, generated something, or was still working when the router stopped
        waiting for its first token."""
        if self.usage is not None:
            return self.usage
        generated = self.tokens + estimate_tokens("".join(self.uncounted))
        reported = self.error.usage if isinstance(self.error, ProviderError) else None
        if reported is not None:
            return replace(reported, completion_tokens=max(reported.completion_tokens, generated))
        if not (generated or self.finished or self.waited_out):
            return TokenUsage()  # refused before generating: providers bill no failed call
        return TokenUsage(self.prompt_estimate, generated)

    def describe(self) -> str:
        if self.skipped:
            return f"{self.route.header()} (skipped: {self.skipped})"
        if self.error is not None:
            return f"{self.route.header()} (failed: {self.error.message})"
        return self.route.header()


@dataclass(frozen=True)
class Charge:
    """What one attempt costs: its model, its tokens, and whether they are estimated."""

    card: ModelCard
    usage: TokenUsage
    estimated: bool

    @property
    def cost_usd(self) -> float:
        return cost(self.card, self.usage)


@dataclass(frozen=True)
class RunReport:
    """A run as the response, the content events and the ledger see it."""

    final: Route | None  # the route of the last attempt
    charges: tuple[Charge, ...] = ()
    path: tuple[str, ...] = ()  # every attempt, described
    served_by: ModelCard | None = None  # the model of the last attempt actually called
    usage: TokenUsage = field(default_factory=TokenUsage)
    first_token_at: float | None = None  # time.perf_counter() of the run's first delta
    retries: int = 0  # attempts repeated on the same route
    fallbacks: int = 0  # moves to another route
    failures: tuple[tuple[Route, ServiceError], ...] = ()  # the attempts that failed

    @property
    def cost_usd(self) -> float:
        return round(sum(c.cost_usd for c in self.charges), 10)

    def route_info(self) -> dict[str, Any]:
        """The `route` object of responses: provider, model, why, cost and, after a fallback, the
        path taken."""
        assert self.final is not None, "a run reports its route once an attempt was made"
        info: dict[str, Any] = {"provider": self.final.provider.name, "model": self.final.model,
                                "reason": self.final.candidate.reason, "cost_usd": self.cost_usd}
        if len(self.path) > 1:
            info["path"] = list(self.path)
        return info


def report(attempts: list[Attempt]) -> RunReport:
    charges = tuple(Charge(a.route.card, a.billed(), a.usage is None and not a.skipped)
                    for a in attempts)
    called = [a for a in attempts if not a.skipped]
    firsts = [a.first_token_at for a in called if a.first_token_at is not None]
    same = [before.route == after.route for before, after in itertools.pairwise(called)]
    return RunReport(
        final=attempts[-1].route if attempts else None, charges=charges,
        path=tuple(a.describe() for a in attempts),
        served_by=called[-1].route.card if called else None,
        usage=sum((c.usage for c in charges), TokenUsage()),
        first_token_at=min(firsts) if firsts else None, retries=sum(same),
        fallbacks=len(same) - sum(same),
        failures=tuple((a.route, a.error) for a in called if a.error is not None))


class Reporting(Protocol):
    """Anything that can report a run (a fallback Run)."""

    def report(self) -> RunReport: ...
