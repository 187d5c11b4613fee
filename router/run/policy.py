"""Which (provider, model) serves a request: a pure ranking with reasons, no network, no clock.

Order of precedence, each a tie-breaker for the one before:
1. the concrete model the request names (an alias counts as naming it);
2. the request's preferred_providers, in their order;
3. with cost optimization, the lowest estimated cost;
4. the default provider (AI_DEFAULT_PROVIDER);
5. catalogue order.
Only models of the requested tier whose provider is available, that can call tools the way the
request needs (models/catalog.py `tool_calling`) and whose context fits the prompt are candidates;
the rest of the ranking is the fallback order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from core.pricing import estimate
from models.catalog import KEY_ENV, TIERS, ModelCard
from models.registry import ToolCalling


@dataclass(frozen=True)
class RouteRequest:
    model: str  # a concrete model, an alias or a tier
    prompt_tokens: int  # estimated
    max_tokens: int
    preferred_providers: tuple[str, ...] = ()
    kind: str = "chat"  # or "completion": a raw prompt (ModelCard.serves)
    # What the request needs of tool calling: "auto" (tools the model may call when it sees fit),
    # "required" (a call it must make: tool_choice "required" or a named function), or "none".
    tool_calling: ToolCalling = "none"
    # model -> prompt tokens its provider's cache is known to hold (router/services/prompt_caches.py):
    # estimated at the cached rate, the rest of the prompt at the input rate.
    cached: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class PolicySettings:
    default_provider: str | None = None
    cost_optimization: bool = True


@dataclass(frozen=True)
class Candidate:
    card: ModelCard
    estimated_cost: float
    reason: str


def resolve(name: str, catalog: Sequence[ModelCard], kind: str = "chat") -> tuple[ModelCard | None, str]:
    """(the concrete card or None for a tier, the tier) of a model that serves `kind`."""
    if name in TIERS:
        return None, name
    named = [card for card in catalog if name == card.name or name in card.aliases]
    for card in named:
        if card.serves(kind):
            return card, card.tier
    served = sorted({c.name for c in catalog if c.serves(kind)})
    if named:
        raise ModelNotFound(name, [*served, *TIERS],
                            f"is {_article(named[0].kind)} model, not served by this endpoint")
    raise ModelNotFound(name, [*served, *TIERS], how=ADD_A_MODEL)


# What an unknown model's error says to do.
ADD_A_MODEL = ("to offer a hosted model, declare it in the config file's catalog.models (provider, "
               "name, tier, context_window, its prices per million tokens, and its kind unless "
               "chat; docs/api.md: Model catalogue)")


def rank(request: RouteRequest, catalog: Sequence[ModelCard], available: set[str],
         settings: PolicySettings) -> list[Candidate]:
    wanted, tier = resolve(request.model, catalog, request.kind)
    in_tier = [c for c in catalog if c.serves(request.kind) and c.tier == tier
               and c.provider in available]
    if not in_tier:
        raise ModelUnavailable(_unavailable(request.model, wanted, tier))
    capable = [c for c in in_tier if c.calls_tools(request.tool_calling)]
    if not capable:
        raise _incapable(request.tool_calling, tier, in_tier, catalog)
    fitting = [c for c in capable if c.context_window > request.prompt_tokens]
    if not fitting:
        largest = max(c.context_window for c in capable)
        raise InvalidRequest(
            f"the prompt (~{request.prompt_tokens} tokens) does not fit any {tier} model "
            f"(largest context {largest} tokens): shorten the messages", param="messages")

    held = dict(request.cached)
    costs = {card.name: estimate(card, request.prompt_tokens, request.max_tokens,
                                 min(held.get(card.name, 0), request.prompt_tokens))
             for card in fitting}

    def key(card: ModelCard) -> tuple[int, int, float, int, int]:
        preferred = request.preferred_providers
        return (
            0 if card == wanted else 1,
            preferred.index(card.provider) if card.provider in preferred else len(preferred),
            costs[card.name] if settings.cost_optimization else 0.0,
            0 if card.provider == settings.default_provider else 1,
            catalog.index(card),
        )

    ranked = sorted(fitting, key=key)
    return [Candidate(card, costs[card.name], _reason(card, request, wanted, tier, settings))
            for card in ranked]


def _reason(card: ModelCard, request: RouteRequest, wanted: ModelCard | None, tier: str,
            settings: PolicySettings) -> str:
    if card == wanted:
        return "requested model" if request.model == card.name else f"alias {request.model!r}"
    instead = ""
    if wanted is not None:
        instead = f"; {wanted.name} " + ("unavailable" if wanted.calls_tools(request.tool_calling)
                                         else f"cannot serve tool_choice {_NEEDS[request.tool_calling]}")
    if card.provider in request.preferred_providers:
        return f"preferred provider {card.provider} in tier {tier}{instead}"
    if settings.cost_optimization:
        return f"lowest estimated cost in tier {tier}{instead}"
    if card.provider == settings.default_provider:
        return f"default provider {card.provider} in tier {tier}{instead}"
    return f"tier {tier}{instead}"


_KEYS = " / ".join(KEY_ENV.values())  # the hosted providers' key variables


def _unavailable(requested: str, wanted: ModelCard | None, tier: str) -> str:
    needs = f"{wanted.name} needs the {wanted.provider} provider; " if wanted else ""
    return (f"no configured provider serves {requested!r}: {needs}no {tier}-tier model is "
            f"available (set {_KEYS} or enable a local model)")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


_NEEDS = {"auto": "'auto'", "required": "'required' or a named function", "none": "'none'"}


def _incapable(need: ToolCalling, tier: str, available: list[ModelCard],
               catalog: Sequence[ModelCard]) -> InvalidRequest | ModelUnavailable:
    """No available model of the tier calls tools as the request needs: a 503 when a model of the
    tier could (its provider is not configured), else a 400."""
    models = ", ".join(f"{c.name} ({_CALLS[c.tool_calling]})" for c in available)
    fixes = ["send tool_choice 'required' or name a function"] if need == "auto" else []
    hosted = any(c.calls_tools(need) for c in catalog if c.kind == "chat" and c.tier == tier)
    if hosted:
        fixes.append(f"configure a hosted provider ({_KEYS})")
    problem = f"no available {tier}-tier model can serve tool_choice {_NEEDS[need]}: {models}"
    message = "; ".join([problem, ", or ".join(fixes)] if fixes else [problem])
    return ModelUnavailable(message) if hosted else InvalidRequest(message, param="tool_choice")


_CALLS = {"none": "no tool calls", "required": "calls tools only when tool_choice is 'required' "
          "or names a function", "auto": "calls tools"}
