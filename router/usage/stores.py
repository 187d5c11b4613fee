"""Where ledger records live: a SQLite file (the embedded default) or PostgreSQL (DATABASE_URL),
behind one small interface. SQL is written once with `?` placeholders and portable types; the
PostgreSQL store numbers the placeholders. Schema changes are numbered migrations, applied once
each, under a lock, by whichever replica starts first.

A batch that the database refuses for what is in it (a NUL PostgreSQL cannot store, a number out of
range, text that is not valid UTF-8) raises RejectedRows, so the ledger can find the bad row; any other
failure means the database is unavailable and the batch is retried as it is."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

from router.usage.record import COLUMNS

Row = tuple[Any, ...]
# Migration 1's columns after request_id, as they were (migrations never change once released).
_V1_REST = ("ts, day, user_id, api_key_id, operation, content_type, provider, model, input_tokens, "
            "output_tokens, cost_usd, hosted_equivalent_usd, savings_usd, cache_hits, latency_ms, "
            "outcome, status, error_type, fallback_path, usage_source, streamed")


class RejectedRows(Exception):
    """The database refused a batch for what is in it; retrying the same rows cannot succeed."""

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, ["""CREATE TABLE usage_records (
            request_id TEXT PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            user_id TEXT NOT NULL,
            api_key_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            content_type TEXT,
            provider TEXT,
            model TEXT,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            hosted_equivalent_usd DOUBLE PRECISION NOT NULL,
            savings_usd DOUBLE PRECISION NOT NULL,
            cache_hits BIGINT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            outcome TEXT NOT NULL,
            status INTEGER NOT NULL,
            error_type TEXT,
            fallback_path TEXT,
            usage_source TEXT NOT NULL,
            streamed BOOLEAN NOT NULL)""",
         "CREATE INDEX usage_records_user_day ON usage_records (user_id, day)",
         "CREATE INDEX usage_records_day ON usage_records (day)"]),
    # The key is the service's own id; the caller's request id and Idempotency-Key are plain
    # columns (a caller reusing an id no longer hides later records). Rows the database refused
    # are kept as JSON in usage_dead_letters.
    (2, ["ALTER TABLE usage_records RENAME TO usage_records_v1",
         "DROP INDEX usage_records_user_day",
         "DROP INDEX usage_records_day",
         """CREATE TABLE usage_records (
            id TEXT PRIMARY KEY,
            request_id TEXT,
            idempotency_key TEXT,
            ts DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            user_id TEXT NOT NULL,
            api_key_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            content_type TEXT,
            provider TEXT,
            model TEXT,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            hosted_equivalent_usd DOUBLE PRECISION NOT NULL,
            savings_usd DOUBLE PRECISION NOT NULL,
            cache_hits BIGINT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            outcome TEXT NOT NULL,
            status INTEGER NOT NULL,
            error_type TEXT,
            fallback_path TEXT,
            usage_source TEXT NOT NULL,
            streamed BOOLEAN NOT NULL)""",
         f"INSERT INTO usage_records SELECT request_id, request_id, NULL, {_V1_REST} "
         "FROM usage_records_v1",
         "DROP TABLE usage_records_v1",
         "CREATE INDEX usage_records_user_day ON usage_records (user_id, day)",
         "CREATE INDEX usage_records_day ON usage_records (day)",
         "CREATE INDEX usage_records_request ON usage_records (request_id)",
         """CREATE TABLE usage_dead_letters (
            id TEXT PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL,
            error TEXT NOT NULL,
            record TEXT NOT NULL)"""]),
    # Prompt cache reads and writes and reasoning tokens, each priced at its own rate.
    (3, ["ALTER TABLE usage_records ADD COLUMN cached_input_tokens BIGINT NOT NULL DEFAULT 0",
         "ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0",
         "ALTER TABLE usage_records ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0"]),
    # The request's priority tier (core/tiers.py); earlier requests all ran as interactive.
    (4, ["ALTER TABLE usage_records ADD COLUMN tier TEXT NOT NULL DEFAULT 'interactive'"]),
    # How many times a streamed request's client reconnected to its run (Last-Event-ID).
    (5, ["ALTER TABLE usage_records ADD COLUMN resumes BIGINT NOT NULL DEFAULT 0"]),
    # The request's group (a class) within its tenant; the budgets of a tenant's levels set through
    # the admin API ('' for no group / no user: a key cannot hold NULL), as LevelBudget JSON.
    (6, ["ALTER TABLE usage_records ADD COLUMN group_id TEXT",
         "CREATE INDEX usage_records_group_day ON usage_records (group_id, day)",
         """CREATE TABLE budget_levels (
            tenant TEXT NOT NULL,
            group_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            budget TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (tenant, group_id, user_id))"""]),
]

INSERT = (f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES "
          f"({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id) DO NOTHING")
DEAD_LETTER = ("INSERT INTO usage_dead_letters (id, ts, error, record) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (id) DO NOTHING")
_MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")


class LedgerStore(Protocol):
    async def migrate(self) -> None: ...

    async def insert(self, rows: Sequence[Row]) -> None:
        """Insert rows (in COLUMNS order) in one transaction; an id already stored is skipped (safe
        retries). RejectedRows when the database refuses what is in them."""
        ...

    async def dead_letter(self, rows: Sequence[Row]) -> None:
        """Keep refused records: (id, ts, error, the record as ASCII JSON)."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        """One statement that changes rows, in a transaction of its own."""
        ...

    async def close(self) -> None: ...


class SQLiteStore:
    """stdlib sqlite3 on one thread of its own, so the event loop never waits on the disk. WAL lets
    several router replicas on one machine share the file."""

    def __init__(self, path: str):
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
            db = sqlite3.connect(self._path, timeout=2.0, isolation_level=None)
            _switch_to_wal(db)
            self._db = db
        return self._db

    async def migrate(self) -> None:
        await self._call(self._migrate)

    def _migrate(self) -> None:
        db = self._conn()
        db.execute(_MIGRATIONS_TABLE)
        db.execute("BEGIN IMMEDIATE")  # one replica migrates; the others wait, then see it done
        try:
            done = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version not in done:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def insert(self, rows: Sequence[Row]) -> None:
        await self._call(self._insert, INSERT, list(rows))

    async def dead_letter(self, rows: Sequence[Row]) -> None:
        await self._call(self._insert, DEAD_LETTER, list(rows))

    def _insert(self, sql: str, rows: list[Row]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            with _rejections(_SQLITE_DATA_ERRORS):
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        rows: list[Row] = await self._call(
            lambda: self._conn().execute(sql, list(params)).fetchall())
        return rows

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._call(lambda: self._conn().execute(sql, list(params)))  # autocommit

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._call(close)
        self._thread.shutdown(wait=False)


def _switch_to_wal(db: sqlite3.Connection, wait_s: float = 2.0) -> None:
    """Changing the journal mode does not wait on the busy timeout: when several replicas open the
    file at once it can fail with "database is locked", so it is retried for a while."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class PostgresStore:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 4):
        self._dsn = dsn
        self._sizes = (min_size, max_size)
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        import asyncpg  # imported here: SQLite-only deployments never load it

        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=self._sizes[0],
                                                   max_size=self._sizes[1], timeout=5,
                                                   command_timeout=10)
        return self._pool

    async def migrate(self) -> None:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7207001)")  # one migrator at a time
            await conn.execute(_MIGRATIONS_TABLE)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version not in done:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                       version, time.time())

    async def insert(self, rows: Sequence[Row]) -> None:
        await self._executemany(INSERT, rows)

    async def dead_letter(self, rows: Sequence[Row]) -> None:
        await self._executemany(DEAD_LETTER, rows)

    async def _executemany(self, sql: str, rows: Sequence[Row]) -> None:
        import asyncpg

        pool = await self._get_pool()
        async with pool.acquire() as conn:  # executemany is atomic: all rows or none
            with _rejections((asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                              UnicodeError, OverflowError)):
                await conn.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(numbered(sql), *params)]

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            await conn.execute(numbered(sql), *params)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# What SQLite refuses in the rows themselves (a "database is locked" is an OperationalError: retried).
_SQLITE_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                       UnicodeError, OverflowError)


@contextmanager
def _rejections(data_errors: tuple[type[Exception], ...]) -> Iterator[None]:
    try:
        yield
    except data_errors as error:
        raise RejectedRows(f"{type(error).__name__}: {error}") from error


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def open_store(url: str) -> LedgerStore:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url.split(':', 1)[0]}:...; "
                     "use sqlite:///path or postgresql://...")
