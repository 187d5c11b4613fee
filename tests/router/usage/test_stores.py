"""Ledger stores on SQLite and PostgreSQL: migrations applied once, even by replicas starting
together; a record stored once, however often it is written; the caller's request id is data, not
the key; rows the database refuses are named as such."""

from __future__ import annotations

import asyncio

import pytest

from router.usage.stores import (
    _MIGRATIONS_TABLE,
    COLUMNS,
    MIGRATIONS,
    PostgresStore,
    RejectedRows,
    SQLiteStore,
    numbered,
    open_store,
)
from tests.router.usage.conftest import Database, usage_record

V2_COLUMNS = COLUMNS[:COLUMNS.index("cached_input_tokens")]  # before migration 3
ALL_VERSIONS = [(version,) for version, _ in MIGRATIONS]


async def versions(db: Database) -> list[tuple[int, ...]]:
    return [tuple(r) for r in await db.open().fetch("SELECT version FROM schema_migrations", [])]


async def test_migrate_is_idempotent(database: Database) -> None:
    store = database.open()
    await store.migrate()
    await store.insert([usage_record(id="kept").row()])
    await store.migrate()
    assert await versions(database) == ALL_VERSIONS
    assert await store.fetch("SELECT id FROM usage_records", []) == [("kept",)]


async def test_replicas_migrating_together_apply_each_migration_once(database: Database) -> None:
    stores = [database.open() for _ in range(3)]
    await asyncio.gather(*(s.migrate() for s in stores))
    assert await versions(database) == ALL_VERSIONS
    await asyncio.gather(*(s.insert([usage_record().row()]) for s in stores))
    assert await stores[0].fetch("SELECT COUNT(*) FROM usage_records", []) == [(3,)]


async def test_a_record_is_stored_once_however_often_it_is_written(database: Database) -> None:
    store = await database.migrated()
    first = usage_record(id="rec-1", cost_usd=0.01)
    await store.insert([first.row()])
    await store.insert([first.row(), usage_record(id="rec-2").row()])
    await store.insert([first.row(), first.row()])
    rows = await store.fetch("SELECT id, cost_usd FROM usage_records ORDER BY id", [])
    assert rows == [("rec-1", 0.01), ("rec-2", 0.01)]


async def test_records_that_share_a_callers_request_id_are_all_kept(database: Database) -> None:
    store = await database.migrated()
    reused = [usage_record(request_id="req-1", cost_usd=usd) for usd in (0.01, 0.02, 0.03)]
    await store.insert([r.row() for r in reused])
    rows = await store.fetch("SELECT cost_usd FROM usage_records WHERE request_id = ? ORDER BY "
                             "cost_usd", ["req-1"])
    assert rows == [(0.01,), (0.02,), (0.03,)]


async def test_a_record_comes_back_as_written(database: Database) -> None:
    store = await database.migrated()
    written = usage_record(content_type="quiz", provider="local", model="smollm2-135m",
                           hosted_equivalent_usd=0.004, savings_usd=0.004, cache_hits=2,
                           outcome="error", status=503, error_type="service_unavailable",
                           fallback_path='["local/smollm2-135m", "openai/gpt-4o-mini"]',
                           usage_source="estimated", streamed=True)
    await store.insert([written.row(), usage_record(user_id="u2").row()])
    (row,) = await store.fetch(f"SELECT {', '.join(COLUMNS)} FROM usage_records WHERE user_id = ?",
                               ["u1"])
    stored = dict(zip(COLUMNS, row, strict=True))
    assert {**stored, "streamed": bool(stored["streamed"])} == dict(zip(COLUMNS, written.row(),
                                                                       strict=True))


async def test_fetch_numbers_its_placeholders_on_each_database(database: Database) -> None:
    store = await database.migrated()
    await store.insert([usage_record(user_id=u, day=d).row()
                        for u, d in [("u1", "2026-03-01"), ("u1", "2026-03-02"), ("u2", "2026-03-02")]])
    rows = await store.fetch("SELECT user_id, day FROM usage_records WHERE user_id = ? AND day >= ?",
                             ["u1", "2026-03-02"])
    assert rows == [("u1", "2026-03-02")]


def test_numbered_turns_question_marks_into_postgres_placeholders() -> None:
    assert numbered("a ? b ?") == "a $1 b $2"
    assert numbered("SELECT 1") == "SELECT 1"
    assert numbered("VALUES (" + ", ".join("?" for _ in COLUMNS) + ")").endswith(f"${len(COLUMNS)})")


def test_open_store_picks_the_store_from_the_url(tmp_path) -> None:
    sqlite = open_store(f"sqlite:///{tmp_path}/usage.db")
    assert isinstance(sqlite, SQLiteStore)
    assert isinstance(open_store("postgresql://db.internal/usage"), PostgresStore)
    assert isinstance(open_store("postgres://db.internal/usage"), PostgresStore)


async def test_a_sqlite_store_creates_the_directory_of_its_file(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/var/ledger/usage.db")
    try:
        await store.migrate()
    finally:
        await store.close()
    assert (tmp_path / "var" / "ledger" / "usage.db").exists()


@pytest.mark.parametrize("url", ["mysql://ledger:s3cret@db.internal/usage", "sqlite:/relative.db",
                                 "usage.db"])
def test_open_store_rejects_an_unsupported_url_without_echoing_it(url: str) -> None:
    expected = r"unsupported database URL .*; use sqlite:///path or postgresql://"
    with pytest.raises(ValueError, match=expected) as e:
        open_store(url)
    assert "s3cret" not in str(e.value)


async def test_records_of_the_first_schema_keep_their_request_id_and_gain_a_key(
        database: Database) -> None:
    store = database.open()
    await store.fetch(_MIGRATIONS_TABLE, [])
    for statement in MIGRATIONS[0][1]:
        await store.fetch(statement, [])
    await store.fetch("INSERT INTO schema_migrations VALUES (1, 0)", [])
    old = usage_record(request_id="client-7")
    v1_values = old.row()[1:2] + old.row()[3:len(V2_COLUMNS)]
    await store.fetch(f"INSERT INTO usage_records VALUES ({', '.join('?' for _ in v1_values)})",
                      list(v1_values))
    await store.migrate()
    (row,) = await store.fetch(f"SELECT {', '.join(COLUMNS)} FROM usage_records", [])
    migrated = dict(zip(COLUMNS, row, strict=True))
    assert (migrated["id"], migrated["request_id"], migrated["idempotency_key"]) == (
        "client-7", "client-7", None)
    assert migrated["cost_usd"] == old.cost_usd and migrated["user_id"] == old.user_id


async def test_records_of_the_second_schema_count_no_cached_or_reasoning_tokens(
        database: Database) -> None:
    store = database.open()
    await store.fetch(_MIGRATIONS_TABLE, [])
    for version, statements in MIGRATIONS[:2]:
        for statement in statements:
            await store.fetch(statement, [])
        await store.fetch("INSERT INTO schema_migrations VALUES (?, 0)", [version])
    old = usage_record(request_id="before-3")
    await store.fetch(f"INSERT INTO usage_records ({', '.join(V2_COLUMNS)}) VALUES "
                      f"({', '.join('?' for _ in V2_COLUMNS)})", list(old.row()[:len(V2_COLUMNS)]))
    await store.migrate()
    (row,) = await store.fetch(f"SELECT {', '.join(COLUMNS)} FROM usage_records", [])
    migrated = dict(zip(COLUMNS, row, strict=True))
    assert (migrated["cached_input_tokens"], migrated["cache_write_tokens"],
            migrated["reasoning_tokens"]) == (0, 0, 0)
    assert migrated["input_tokens"] == old.input_tokens and migrated["request_id"] == "before-3"
    await store.insert([usage_record(cached_input_tokens=7, cache_write_tokens=3,
                                     reasoning_tokens=2).row()])
    assert await store.fetch("SELECT SUM(cached_input_tokens), SUM(cache_write_tokens), "
                             "SUM(reasoning_tokens) FROM usage_records", []) == [(7, 3, 2)]


async def test_records_of_the_third_schema_ran_as_interactive(database: Database) -> None:
    store = database.open()
    await store.fetch(_MIGRATIONS_TABLE, [])
    for version, statements in MIGRATIONS[:3]:
        for statement in statements:
            await store.fetch(statement, [])
        await store.fetch("INSERT INTO schema_migrations VALUES (?, 0)", [version])
    v3_columns = COLUMNS[:COLUMNS.index("tier")]
    await store.fetch(f"INSERT INTO usage_records ({', '.join(v3_columns)}) VALUES "
                      f"({', '.join('?' for _ in v3_columns)})",
                      list(usage_record(request_id="before-4").row()[:len(v3_columns)]))
    await store.migrate()
    await store.insert([usage_record(tier="background").row()])
    assert await store.fetch("SELECT tier FROM usage_records ORDER BY tier", []) == [
        ("background",), ("interactive",)]


async def test_records_of_the_fourth_schema_had_no_resumes(database: Database) -> None:
    store = database.open()
    await store.fetch(_MIGRATIONS_TABLE, [])
    for version, statements in MIGRATIONS[:4]:
        for statement in statements:
            await store.fetch(statement, [])
        await store.fetch("INSERT INTO schema_migrations VALUES (?, 0)", [version])
    v4_columns = COLUMNS[:COLUMNS.index("resumes")]
    await store.fetch(f"INSERT INTO usage_records ({', '.join(v4_columns)}) VALUES "
                      f"({', '.join('?' for _ in v4_columns)})",
                      list(usage_record(request_id="before-5").row()[:len(v4_columns)]))
    await store.migrate()
    await store.insert([usage_record(resumes=3).row()])
    assert await store.fetch("SELECT resumes FROM usage_records ORDER BY resumes", []) == [
        (0,), (3,)]


async def test_records_of_the_fifth_schema_named_no_group(database: Database) -> None:
    store = database.open()
    await store.fetch(_MIGRATIONS_TABLE, [])
    for version, statements in MIGRATIONS[:5]:
        for statement in statements:
            await store.fetch(statement, [])
        await store.fetch("INSERT INTO schema_migrations VALUES (?, 0)", [version])
    v5_columns = COLUMNS[:COLUMNS.index("group_id")]
    await store.fetch(f"INSERT INTO usage_records ({', '.join(v5_columns)}) VALUES "
                      f"({', '.join('?' for _ in v5_columns)})",
                      list(usage_record(request_id="before-6").row()[:len(v5_columns)]))
    await store.migrate()
    await store.insert([usage_record(group_id="class-7a").row()])
    assert await store.fetch("SELECT group_id FROM usage_records ORDER BY group_id", []) in (
        [("class-7a",), (None,)], [(None,), ("class-7a",)])  # where NULL sorts differs


async def test_a_budget_level_is_written_once_per_level(database: Database) -> None:
    store = await database.migrated()
    upsert = ("INSERT INTO budget_levels (tenant, group_id, user_id, budget, updated_at) "
              "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, group_id, user_id) DO UPDATE SET "
              "budget = excluded.budget, updated_at = excluded.updated_at")
    await store.execute(upsert, ["school", "class-7a", "", '{"usd": 1}', 1.0])
    await store.execute(upsert, ["school", "class-7a", "", '{"usd": 2}', 2.0])
    assert await store.fetch("SELECT budget, updated_at FROM budget_levels", []) == [
        ('{"usd": 2}', 2.0)]


async def test_rows_the_database_cannot_store_are_rejected_as_such(database: Database) -> None:
    store = await database.migrated()
    bad = usage_record(user_id="\ud800", input_tokens=2**70)
    with pytest.raises(RejectedRows):
        await store.insert([usage_record().row(), bad.row()])
    assert await store.fetch("SELECT COUNT(*) FROM usage_records", []) == [(0,)]  # all or none
