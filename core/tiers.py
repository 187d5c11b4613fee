"""Priority tiers: `assessment` > `interactive` > `background`. A request's tier is the one it asks
for (`tier`, bounded by its key's `max_tier`) or its key's default; it becomes the local engines'
queue priority (GenerationParams.priority: llama.cpp's queue serves higher first, vLLM gets
-priority) and chooses how long a local model may keep it waiting before the router spills it to
the next candidate (router.spill_over_wait_s), so that under load background work leaves first."""

from __future__ import annotations

from typing import Literal

from core.errors import PermissionDenied

Tier = Literal["assessment", "interactive", "background"]
TIERS: tuple[Tier, ...] = ("background", "interactive", "assessment")  # lowest first
PRIORITY: dict[Tier, int] = {tier: rank for rank, tier in enumerate(TIERS)}


def granted(requested: Tier | None, default: Tier, maximum: Tier, key_id: str) -> Tier:
    """The tier a request runs at: the one it asks for, or the key's default; a 403 naming `tier`
    when it asks above what its key may (the request is well formed; the key lacks the right)."""
    if requested is None:
        return default
    if PRIORITY[requested] > PRIORITY[maximum]:
        raise PermissionDenied(f"tier {requested!r} is above what the key {key_id!r} may ask "
                               f"(at most {maximum!r})", code="tier_not_allowed", param="tier")
    return requested
