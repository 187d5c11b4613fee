"""The usage report, on SQLite and PostgreSQL: totals and spend by day, provider, model and
operation for a user or everyone over a window of UTC days, and what local models saved."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

import pytest_asyncio

from router.usage.record import UsageRecord
from router.usage.report import recent_records, usage_report
from router.usage.stores import LedgerStore
from tests.router.usage.conftest import Database, usage_record

MARCH_1 = 1_772_323_200.0  # 2026-03-01 00:00 UTC
HOUR, DAY = 3_600.0, 86_400.0
FALLBACK = '["anthropic/claude-3-5-haiku", "openai/gpt-4o-mini"]'

HOSTED = usage_record(request_id="a", ts=MARCH_1 + HOUR, day="2026-03-01", provider="openai",
                      model="gpt-4o-mini", input_tokens=100, output_tokens=50, cost_usd=0.01,
                      fallback_path=FALLBACK, streamed=True, cached_input_tokens=60,
                      cache_write_tokens=5, reasoning_tokens=20)
LOCAL_CHAT = usage_record(request_id="b", ts=MARCH_1 + 2 * HOUR, day="2026-03-01", provider="local",
                          model="smollm2-135m", input_tokens=200, output_tokens=100, cost_usd=0.0005,
                          hosted_equivalent_usd=0.004, savings_usd=0.0035)
FAILED = usage_record(request_id="c", ts=MARCH_1 + DAY + HOUR, day="2026-03-02",
                      operation="embeddings", provider=None, model=None, input_tokens=10,
                      output_tokens=0, cost_usd=0.0, outcome="error", status=503,
                      error_type="service_unavailable", usage_source="estimated")
LOCAL_EMBED = usage_record(request_id="d", ts=MARCH_1 + DAY + 2 * HOUR, day="2026-03-02",
                           operation="embeddings", provider="local", model="bge-small",
                           input_tokens=30, output_tokens=0, cost_usd=0.0, cache_hits=3,
                           hosted_equivalent_usd=0.0001, savings_usd=0.0001)
OTHER_USER = usage_record(request_id="e", ts=MARCH_1 + DAY + 3 * HOUR, day="2026-03-02",
                          user_id="u2", operation="generate-content", content_type="quiz",
                          provider="anthropic", model="claude-3-5-haiku", input_tokens=1000,
                          output_tokens=500, cost_usd=0.05)
APRIL = usage_record(request_id="f", ts=MARCH_1 + 31 * DAY, day="2026-04-01", input_tokens=999,
                     cost_usd=1.0)
FEBRUARY = usage_record(request_id="g", ts=MARCH_1 - HOUR, day="2026-02-28", user_id="u2",
                        cost_usd=2.0)
RECORDS = [HOSTED, LOCAL_CHAT, FAILED, LOCAL_EMBED, OTHER_USER, APRIL, FEBRUARY]


def sums(requests: int, input_tokens: int, output_tokens: int, cost_usd: float,
         cached: int = 0, written: int = 0, reasoning: int = 0) -> dict[str, float]:
    return {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "cached_input_tokens": cached,
            "cache_write_tokens": written, "reasoning_tokens": reasoning, "cost_usd": cost_usd}


@pytest_asyncio.fixture(loop_scope="function")
async def store(database: Database) -> LedgerStore:
    store = await database.migrated()
    await store.insert([r.row() for r in RECORDS])
    return store


async def march(store: LedgerStore, user_id: str | None) -> dict:
    return await usage_report(store, user_id, date(2026, 3, 1), date(2026, 3, 31))


async def test_totals_count_every_request_of_the_window(store: LedgerStore) -> None:
    report = await march(store, None)
    assert (report["user_id"], report["from"], report["to"]) == (None, "2026-03-01", "2026-03-31")
    assert report["totals"] == {**sums(5, 1340, 650, 0.0605, 60, 5, 20), "cache_hits": 3, "errors": 1}


async def test_spend_is_grouped_by_day_provider_model_and_operation(store: LedgerStore) -> None:
    report = await march(store, None)
    assert report["by_day"] == [{"day": "2026-03-01", **sums(2, 300, 150, 0.0105, 60, 5, 20)},
                                {"day": "2026-03-02", **sums(3, 1040, 500, 0.05)}]
    assert report["by_provider"] == [{"provider": "anthropic", **sums(1, 1000, 500, 0.05)},
                                     {"provider": "local", **sums(2, 230, 100, 0.0005)},
                                     {"provider": "none", **sums(1, 10, 0, 0.0)},
                                     {"provider": "openai", **sums(1, 100, 50, 0.01, 60, 5, 20)}]
    assert report["by_model"] == [{"model": "bge-small", **sums(1, 30, 0, 0.0)},
                                  {"model": "claude-3-5-haiku", **sums(1, 1000, 500, 0.05)},
                                  {"model": "gpt-4o-mini", **sums(1, 100, 50, 0.01, 60, 5, 20)},
                                  {"model": "none", **sums(1, 10, 0, 0.0)},
                                  {"model": "smollm2-135m", **sums(1, 200, 100, 0.0005)}]
    assert report["by_operation"] == [{"operation": "chat.completions",
                                       **sums(2, 300, 150, 0.0105, 60, 5, 20)},
                                      {"operation": "embeddings", **sums(2, 40, 0, 0.0)},
                                      {"operation": "generate-content", **sums(1, 1000, 500, 0.05)}]


async def test_savings_compare_local_requests_with_the_cheapest_hosted_model(store: LedgerStore) -> None:
    savings = (await march(store, None))["savings"]
    assert {k: v for k, v in savings.items() if k != "baseline"} == {
        "local_requests": 2, "local_tokens": 330, "local_cost_usd": 0.0005,
        "hosted_equivalent_usd": 0.0041, "savings_usd": 0.0036}
    assert "cheapest hosted model" in savings["baseline"]


async def test_a_users_report_counts_only_their_requests(store: LedgerStore) -> None:
    report = await march(store, "u1")
    assert report["user_id"] == "u1"
    assert report["totals"] == {**sums(4, 340, 150, 0.0105, 60, 5, 20), "cache_hits": 3, "errors": 1}
    assert [p["provider"] for p in report["by_provider"]] == ["local", "none", "openai"]
    other = await march(store, "u2")
    assert other["totals"] == {**sums(1, 1000, 500, 0.05), "cache_hits": 0, "errors": 0}
    assert other["savings"]["local_requests"] == 0


async def test_the_window_includes_both_of_its_days_and_nothing_outside(store: LedgerStore) -> None:
    one_day = await usage_report(store, None, date(2026, 3, 2), date(2026, 3, 2))
    assert one_day["totals"] == {**sums(3, 1040, 500, 0.05), "cache_hits": 3, "errors": 1}
    spring = await usage_report(store, "u1", date(2026, 3, 1), date(2026, 4, 30))
    assert [d["day"] for d in spring["by_day"]] == ["2026-03-01", "2026-03-02", "2026-04-01"]
    assert spring["totals"]["cost_usd"] == 1.0105


async def test_an_empty_window_reports_zeros(store: LedgerStore) -> None:
    report = await usage_report(store, "u1", date(2025, 1, 1), date(2025, 12, 31))
    assert report["totals"] == {**sums(0, 0, 0, 0.0), "cache_hits": 0, "errors": 0}
    assert report["by_day"] == report["by_provider"] == report["by_model"] == []
    assert report["savings"]["savings_usd"] == 0.0 and report["savings"]["local_requests"] == 0


def as_returned(record: UsageRecord) -> dict:
    fallback = record.fallback_path
    return {**asdict(record), "fallback_path": None if fallback is None else
            ["anthropic/claude-3-5-haiku", "openai/gpt-4o-mini"]}


async def test_recent_records_are_newest_first_with_the_fallback_path_decoded(store: LedgerStore) -> None:
    records = await recent_records(store, "u1", limit=10)
    assert [r["request_id"] for r in records] == ["f", "d", "c", "b", "a"]
    assert records[-1] == as_returned(HOSTED)
    assert records[-1]["fallback_path"] == ["anthropic/claude-3-5-haiku", "openai/gpt-4o-mini"]
    assert records[-1]["streamed"] is True and records[0]["streamed"] is False
    assert records[2] == as_returned(FAILED)


async def test_recent_records_are_limited_and_per_user(store: LedgerStore) -> None:
    assert [r["request_id"] for r in await recent_records(store, "u1", limit=2)] == ["f", "d"]
    assert [r["request_id"] for r in await recent_records(store, "u2", limit=10)] == ["e", "g"]
    assert await recent_records(store, "nobody", limit=10) == []
