"""The usage ledger: `record()` never waits; a background writer stores records in batches and keeps
them, retrying with backoff, while the database is unavailable (SQLite locked by another process,
PostgreSQL unreachable), so none are lost unless the buffer overflows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest_asyncio

from core.config import LedgerConfig
from core.metrics import LedgerMetrics
from router.usage.ledger import Ledger
from router.usage.record import utc_day
from router.usage.stores import LedgerStore
from tests.fakes.tcp_proxy import TcpProxy
from tests.router.usage.conftest import Database, usage_record, with_host


class Outage(Protocol):
    async def down(self) -> None: ...

    async def up(self) -> None: ...


class SQLiteLocked:
    """Another process holding the database's write lock."""

    def __init__(self, path: str):
        self._path = path
        self._holder: sqlite3.Connection | None = None

    async def down(self) -> None:
        self._holder = sqlite3.connect(self._path, isolation_level=None)
        self._holder.execute("BEGIN EXCLUSIVE")

    async def up(self) -> None:
        if self._holder is not None:
            self._holder.execute("COMMIT")
            self._holder.close()
            self._holder = None


@dataclass
class Setup:
    store: LedgerStore  # the ledger's store, which the outage cuts off
    reader: LedgerStore  # the same database, reached directly
    outage: Outage

    async def ids(self) -> list[str]:
        return [r[0] for r in await self.reader.fetch("SELECT id FROM usage_records ORDER BY id", [])]


@pytest_asyncio.fixture(loop_scope="function")
async def setup(database: Database) -> AsyncIterator[Setup]:
    reader = await database.migrated()
    if database.kind == "sqlite":
        outage: Outage = SQLiteLocked(database.url.removeprefix("sqlite:///"))
        yield Setup(database.open(owned=True), reader, outage)
        await outage.up()
        return
    target = urlsplit(database.url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).up()
    yield Setup(database.open(with_host(database.url, "127.0.0.1", proxy.port), owned=True), reader,
                proxy)
    await proxy.down()


def quick(**overrides: Any) -> LedgerConfig:
    return LedgerConfig(**{"flush_interval_s": 0.02, "retry_max_s": 0.2, **overrides})


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def test_records_are_written_in_the_background(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick(batch_size=3))
    records = [usage_record() for _ in range(7)]
    try:
        for record in records:
            ledger.record(record)
        assert ledger.buffered == 7  # record() only buffers
        await eventually(lambda: ledger.buffered == 0)
        assert await setup.ids() == sorted(r.id for r in records)
        assert (ledger.stats.written, ledger.stats.failures, ledger.stats.dropped) == (7, 0, 0)
    finally:
        await ledger.close()


async def test_records_buffered_during_an_outage_are_written_once_it_ends(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick(batch_size=4))
    await ledger.ready()
    records = [usage_record() for _ in range(10)]
    try:
        await setup.outage.down()
        for record in records[:6]:
            ledger.record(record)
        await eventually(lambda: ledger.stats.failures >= 1)
        for record in records[6:]:
            ledger.record(record)
        assert ledger.buffered == 10 and ledger.stats.written == 0
        assert ledger.stats.last_error is not None
        await setup.outage.up()
        await eventually(lambda: ledger.buffered == 0)
        assert await setup.ids() == sorted(r.id for r in records)
        assert (ledger.stats.written, ledger.stats.dropped) == (10, 0)
        failures = ledger.stats.failures
        ledger.record(usage_record())
        await eventually(lambda: ledger.buffered == 0)
        assert ledger.stats.failures == failures  # the writes succeed again
    finally:
        await ledger.close()


async def test_flush_reports_false_while_the_database_is_down_and_true_once_up(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick())
    await ledger.ready()
    records = [usage_record(), usage_record()]
    try:
        await setup.outage.down()
        for record in records:
            ledger.record(record)
        started = time.monotonic()
        assert await ledger.flush(timeout_s=1.0) is False
        assert time.monotonic() - started < 3.0  # gives up; does not hang
        assert ledger.buffered == 2
        await setup.outage.up()
        assert await ledger.flush() is True
        assert ledger.buffered == 0
        assert await setup.ids() == sorted(r.id for r in records)
    finally:
        await ledger.close()


async def test_a_full_buffer_drops_the_oldest_records_and_counts_them(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick(max_buffered=3))
    try:
        await setup.outage.down()
        for i in range(5):
            ledger.record(usage_record(id=f"r{i}"))
        assert (ledger.buffered, ledger.stats.dropped) == (3, 2)
        await setup.outage.up()
        assert await ledger.flush() is True
        assert await setup.ids() == ["r2", "r3", "r4"]
    finally:
        await ledger.close()


async def test_the_first_write_migrates_the_database(database: Database) -> None:
    ledger = Ledger(database.open(owned=True), quick())
    record = usage_record()
    try:
        ledger.record(record)
        assert await ledger.flush() is True
    finally:
        await ledger.close()
    assert await database.open().fetch("SELECT id FROM usage_records", []) == [(record.id,)]


async def test_close_writes_what_is_buffered(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick(flush_interval_s=60))
    record = usage_record()
    ledger.record(record)
    await ledger.close()
    assert await setup.ids() == [record.id]


async def test_flush_with_nothing_buffered_is_true_at_once(setup: Setup) -> None:
    ledger = Ledger(setup.store, quick())
    try:
        assert await ledger.flush() is True
    finally:
        await ledger.close()


def test_utc_day_is_the_calendar_day_in_utc() -> None:
    assert utc_day(1_772_323_199.0) == "2026-02-28"
    assert utc_day(1_772_323_200.0) == "2026-03-01"


def unstorable(kind: str) -> str:
    """A user id the database refuses: PostgreSQL cannot store NUL in text; SQLite stores NUL but,
    like PostgreSQL, cannot encode a lone surrogate."""
    return "bad\x00user" if kind == "postgres" else "bad\ud800user"


async def test_a_record_the_database_refuses_is_dead_lettered_and_the_rest_written(
        database: Database) -> None:
    ledger = Ledger(database.open(owned=True), quick(batch_size=8))
    bad = usage_record(user_id=unstorable(database.kind))
    good = [usage_record() for _ in range(11)]
    try:
        for record in [*good[:5], bad, *good[5:]]:
            ledger.record(record)
        await eventually(lambda: ledger.buffered == 0)
        ledger.record(later := usage_record())  # the writer goes on
        await eventually(lambda: ledger.buffered == 0)
        reader = database.open()
        stored = await reader.fetch("SELECT id FROM usage_records ORDER BY id", [])
        assert [r[0] for r in stored] == sorted(r.id for r in [*good, later])
        ((record_id, error, kept),) = await reader.fetch(
            "SELECT id, error, record FROM usage_dead_letters", [])
        assert record_id == bad.id and error
        assert json.loads(kept)["user_id"] == bad.user_id  # nothing of it is lost
        assert (ledger.stats.dead_lettered, ledger.stats.failures) == (1, 0)  # not an outage
    finally:
        await ledger.close()


@dataclass
class Recorded:
    """Counters and a gauge that keep what the ledger reports."""

    values: list[float] = field(default_factory=list)

    def inc(self, value: float = 1.0) -> None:
        self.values.append(value)

    def set(self, value: float) -> None:
        self.values.append(value)


def recorded() -> LedgerMetrics:
    return LedgerMetrics(Recorded(), Recorded(), Recorded(), Recorded())


class Unreachable:
    """A database that is down: every insert fails, and is counted."""

    def __init__(self) -> None:
        self.inserts = 0

    async def migrate(self) -> None:
        return None

    async def insert(self, rows: Any) -> None:
        self.inserts += 1
        raise ConnectionRefusedError("the database is down")

    async def dead_letter(self, rows: Any) -> None:
        raise AssertionError("nothing is refused while the database is down")

    async def fetch(self, sql: str, params: Any) -> list[Any]:
        return []

    async def close(self) -> None:
        return None


async def test_new_records_do_not_cut_the_writers_backoff_short() -> None:
    store = Unreachable()
    ledger = Ledger(store, quick(batch_size=2, retry_max_s=5.0))
    try:
        for _ in range(100):  # a steady stream of requests for a second, into a full buffer
            ledger.record(usage_record())
            await asyncio.sleep(0.01)
        # Backing off 0.1, 0.2, 0.4, 0.8 s...: a handful of tries, not one per incoming record.
        assert 2 <= store.inserts <= 6, store.inserts
    finally:
        ledger._task and ledger._task.cancel()


async def test_the_buffered_gauge_follows_the_buffer_during_an_outage(setup: Setup) -> None:
    metrics = recorded()
    ledger = Ledger(setup.store, quick(), metrics)
    await ledger.ready()
    try:
        await setup.outage.down()
        for _ in range(3):
            ledger.record(usage_record())
        assert metrics.buffered.values[-1] == 3  # type: ignore[attr-defined]
        await eventually(lambda: ledger.stats.failures >= 1)
        assert len(metrics.write_failures.values) >= 1  # type: ignore[attr-defined]
        await setup.outage.up()
        await eventually(lambda: ledger.buffered == 0)
        assert metrics.buffered.values[-1] == 0  # type: ignore[attr-defined]
    finally:
        await ledger.close()
