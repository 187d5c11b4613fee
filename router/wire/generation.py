"""The request fields every generation route shares (chat completions, completions, responses,
generate-content), in one base: `GenerationRequest` (its end user and their group come from each
route's own fields), and `SampledRequest` for OpenAI's two completion routes, which also share
their sampling fields. router/http/generated.py reads the caller's user and group, the tier and
whether to stream from it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from core.tiers import Tier
from models.catalog import ProviderName
from router.wire.rules import GROUP, Identifier, Wire

# A seed as engines take it (torch and vLLM: a 64-bit integer), as OpenAI bounds it.
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# The default router.max_tokens_limit; a deployment may allow more.
MAX_TOKENS: JsonDict = {"maximum": 4096,
                        "description": "at most router.max_tokens_limit (4096 by default)"}


class StreamOptions(Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = Field(
        None, description="Advisory: ignored; chunks carry no obfuscation padding.")


class GenerationRequest(Wire):
    model: Identifier
    # Our extension: providers to try first, in order ("local", "openai", "anthropic").
    preferred_providers: list[ProviderName] = Field(default_factory=list)
    tier: Tier | None = Field(None, description=(
        "Our extension: the request's priority tier (assessment > interactive > background), at "
        "most its key's max_tier (else a 403 naming tier); omitted: the key's default tier."))

    def end_user(self) -> str | None:
        """The end user the request is for (budgets, rate limits, the ledger)."""
        raise NotImplementedError

    def end_group(self) -> str | None:
        """The end user's group (a class) in the key's tenant (budgets, the ledger)."""
        raise NotImplementedError

    def streamed(self) -> bool:
        """Whether to answer as a stream of events (each route has its own default)."""
        raise NotImplementedError


class SampledRequest(GenerationRequest):
    stream: bool = False
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    stream_options: StreamOptions | None = None
    user: Identifier | None = None  # the end user: budgets, limits
    group: Identifier | None = Field(None, description=GROUP)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, stop: Any) -> Any:
        """One error for the field, not one per member of its union."""
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stop

    def end_user(self) -> str | None:
        return self.user

    def end_group(self) -> str | None:
        return self.group

    def streamed(self) -> bool:
        return self.stream

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
