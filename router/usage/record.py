"""The usage ledger's record: one per request. Shared by the meter that makes it, the ledger that
buffers it and the stores that write it; its fields are the table's columns, in order."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, fields
from enum import StrEnum
from typing import Literal

from core.ids import new_id
from core.tiers import Tier

# shared: served by an identical request's run in flight; cached: a stored artifact replayed
# (router/services/artifacts.py). Both are billed nothing. stopped: its run was stopped
# (POST /v1/runs/{id}/cancel); it is billed what it used, as a client that left is.
Outcome = Literal["success", "error", "client_disconnected", "shared", "cached", "stopped"]


class Operation(StrEnum):
    """What a request asked for: the ledger's `operation` column and the metrics' label."""

    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    RESPONSES = "responses"
    CONTENT = "generate-content"
    EMBEDDINGS = "embeddings"


@dataclass(frozen=True)
class UsageRecord:
    id: str  # the ledger's key, made by the service (never the caller's)
    request_id: str | None  # the caller's X-Request-Id (or the one the ingress gave the request)
    idempotency_key: str | None  # the caller's Idempotency-Key, when it sent one
    ts: float
    day: str
    user_id: str
    api_key_id: str
    operation: str  # an Operation's value
    content_type: str | None
    provider: str | None  # the final provider/model (the whole path is in fallback_path)
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    hosted_equivalent_usd: float  # local tokens priced at the cheapest hosted model of their tier
    savings_usd: float
    cache_hits: int
    latency_ms: float
    outcome: Outcome
    status: int
    error_type: str | None
    fallback_path: str | None  # JSON list of the attempts, when there was more than one
    usage_source: Literal["provider", "estimated"]
    streamed: bool
    # Of input_tokens (every prompt token, OpenAI's convention): those read from the provider's
    # prompt cache and those written to it; of output_tokens, the reasoning ones (migration 3).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tier: Tier = "interactive"  # core/tiers.py: the tier the request ran at (migration 4)
    resumes: int = 0  # reconnects to the stream's run while it ran (migration 5)
    group_id: str | None = None  # the request's group (a class) in its tenant (migration 6)

    def row(self) -> tuple[object, ...]:
        return astuple(self)


COLUMNS = tuple(f.name for f in fields(UsageRecord))


def new_record_id() -> str:
    return new_id()


def utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))
