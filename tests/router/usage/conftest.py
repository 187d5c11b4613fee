"""The ledger's databases for these tests: a SQLite file in tmp_path, or a fresh schema of its own on
the session's PostgreSQL (so tests never see each other's rows); and a builder of ledger records."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from router.usage.record import UsageRecord
from router.usage.stores import LedgerStore, open_store

BASE = UsageRecord(
    id="r", request_id="r", idempotency_key=None, ts=1_772_366_400.0, day="2026-03-01",
    user_id="u1", api_key_id="backend",
    operation="chat.completions", content_type=None, provider="openai", model="gpt-4o-mini",
    input_tokens=100, output_tokens=50, cost_usd=0.01, hosted_equivalent_usd=0.0, savings_usd=0.0,
    cache_hits=0, latency_ms=120.0, outcome="success", status=200, error_type=None,
    fallback_path=None, usage_source="provider", streamed=False)


def usage_record(**fields: Any) -> UsageRecord:
    """A plausible record; a fresh record id unless one is given."""
    return replace(BASE, **{"id": uuid.uuid4().hex, **fields})


def with_host(url: str, host: str, port: int) -> str:
    """The URL pointed at another host and port, its user, path and query kept."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}:{port}" if user else f"{host}:{port}"))


@dataclass
class Database:
    kind: str  # sqlite | postgres
    url: str
    _opened: list[LedgerStore] = field(default_factory=list)

    def open(self, url: str | None = None, owned: bool = False) -> LedgerStore:
        """A store on this database, closed after the test unless `owned` (by a ledger, which
        closes its store); `url` reaches the database another way."""
        store = open_store(url or self.url)
        if not owned:
            self._opened.append(store)
        return store

    async def migrated(self) -> LedgerStore:
        store = self.open()
        await store.migrate()
        return store

    async def close(self) -> None:
        for store in self._opened:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    return str(request.getfixturevalue("postgres_url"))  # set up here: it runs its own event loop


# Async fixtures default to the session's event loop (pyproject) but tests run on their own: a fixture
# holding connections must run on the test's loop.
@pytest_asyncio.fixture(loop_scope="function")
async def database(database_url: str) -> AsyncIterator[Database]:
    if database_url.startswith("sqlite:"):
        db = Database("sqlite", database_url)
        yield db
        await db.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    parts = urlsplit(database_url)
    query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
    db = Database("postgres", urlunsplit(parts._replace(query=query)))
    try:
        yield db
        await db.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
