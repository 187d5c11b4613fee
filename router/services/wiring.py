"""What the HTTP API serves requests with, built from the config and the model backends. The Serve
ingress builds it from deployment handles; tests build it from scripted providers, in process."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from core import metrics
from core.breakers import Breakers, BreakerSettings
from core.config import AppConfig
from core.tracing import Tracing, start_tracing
from models.catalog import ModelCard
from router.run.providers import Provider
from router.run.ttft import FirstTokenLimits, learned_limits
from router.services.artifacts import artifact_store
from router.services.chat import ChatService, build_catalog
from router.services.completions import CompletionsService
from router.services.content import ContentService
from router.services.embeddings import EmbedderClient, EmbeddingService, front_cache
from router.services.readiness import HealthCheck, Readiness
from router.services.responses import ResponsesService
from router.services.run_mirror import RedisMirror
from router.services.runs import Runs
from router.usage.budget_stores import MemoryBudgetStore, RedisBudgetStore
from router.usage.budgets import Budgets, SpendRow
from router.usage.ledger import Ledger
from router.usage.levels import Levels
from router.usage.meter import Accounting
from router.usage.ratelimit import MemoryBuckets, RateLimiter, RedisBuckets
from router.usage.report import spend_by_user_day
from router.usage.sharedstate import SharedState
from router.usage.stores import open_store

log = logging.getLogger("ray.serve")

@dataclass
class Services:
    config: AppConfig
    chat: ChatService
    content: ContentService
    responses: ResponsesService
    completions: CompletionsService
    embeddings: EmbeddingService
    accounting: Accounting
    breakers: Breakers
    first_token: FirstTokenLimits
    readiness: Readiness = field(default_factory=lambda: Readiness({}))
    tracing: Tracing | None = None  # this replica's, when config.tracing is on
    runs: Runs | None = None  # streams kept for a reconnect (router.resume.enabled)

    async def close(self) -> None:
        """End the runs still going (each recorded), settle what is in flight, write what the
        ledger still buffers and release connections (graceful shutdown)."""
        if self.runs is not None:
            await self.runs.close()
        await self.accounting.close()
        await self.chat.aclose()
        await self.embeddings.aclose()
        if self.tracing is not None:
            self.tracing.shutdown()


def build_services(config: AppConfig, providers: dict[str, Provider],
                   embedder: EmbedderClient | None = None,
                   readiness: dict[str, HealthCheck] | None = None) -> Services:
    breakers = Breakers(BreakerSettings(**config.router.breaker.model_dump()),
                        on_change=metrics.breaker_changed)
    first_token = learned_limits(config.router)
    catalog = build_catalog(config)
    tracing = start_tracing(config.tracing, "router")
    chat = ChatService(config.router, providers, catalog, breakers, first_token, tracing)
    warn_if_open(config)
    accounting = build_accounting(config, catalog)
    return Services(
        config=config, chat=chat,
        content=ContentService(chat, artifact_store(config.artifacts, accounting.shared),
                               by_group=config.artifacts.scope == "group"),
        responses=ResponsesService(chat),
        completions=CompletionsService(chat),
        embeddings=EmbeddingService(config.embedder, embedder, "openai" in providers,
                                    front_cache(config.embedder) if embedder else None, catalog),
        accounting=accounting, breakers=breakers, first_token=first_token,
        readiness=Readiness(dict(readiness or {})), tracing=tracing, runs=build_runs(config))


def build_runs(config: AppConfig) -> Runs | None:
    """Runs kept in this replica's memory, and mirrored in Redis when one is configured (with a
    pool of their own: a follower's reads wait on Redis, budgets' calls must not wait on them)."""
    resume = config.router.resume
    if not resume.enabled:
        return None
    if config.redis_url is None:
        return Runs(resume)
    # Its writes are in the background: a busy replica's late read of Redis's answer is no failure.
    state = SharedState.connect(config.redis_url, max_connections=16, timeout_s=2.0)
    return Runs(resume, RedisMirror(state, resume, config.redis_url))


def build_accounting(config: AppConfig, catalog: list[ModelCard]) -> Accounting:
    """Budgets and rate limits in Redis (shared by every replica, behind one breaker), or in this
    replica's memory, its budgets seeded from the ledger's spend of the current periods."""
    ledger = None
    if config.ledger.enabled:
        ledger = Ledger(open_store(config.ledger.database_url), config.ledger)
    ttl = config.budgets.hold_ttl_s
    levels = Levels(config.budgets.levels, ledger, config.budgets.levels_refresh_s)
    spend = _ledger_spend(ledger, config) if ledger else None
    if config.redis_url:
        state = SharedState.connect(config.redis_url)
        budgets = Budgets(config.budgets, RedisBudgetStore(state), hold_ttl_s=ttl, levels=levels,
                          ledger=spend)
        limiter = RateLimiter(config.rate_limits, RedisBuckets(state))
        return Accounting(ledger, budgets, limiter, catalog, state)
    budgets = Budgets(config.budgets, MemoryBudgetStore(), hold_ttl_s=ttl, seed=spend,
                      levels=levels, ledger=spend)
    return Accounting(ledger, budgets, RateLimiter(config.rate_limits, MemoryBuckets()), catalog)


def _ledger_spend(ledger: Ledger,
                  config: AppConfig) -> Callable[[str], Awaitable[list[SpendRow]]]:
    """The ledger's spend per tenant, group, user and day ("" in the ledger: no user)."""
    tenants = {key.id: key.tenant_id for key in config.auth.api_keys}

    async def spend(since: str) -> list[SpendRow]:
        rows = await ledger.read(lambda store: spend_by_user_day(store, since))
        return [(tenants.get(key, key), group, user or None, day, usd)
                for key, group, user, day, usd in rows]
    return spend


def warn_if_open(config: AppConfig) -> None:
    if not config.auth.enabled:
        log.warning("\n%s\nAUTH IS DISABLED (auth.enabled: false): every caller is let in without "
                    "an API key. For local development only.\n%s", "!" * 78, "!" * 78)
