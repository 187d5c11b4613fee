"""GET /api/v1/ai/usage: spend per user, per group (or in total) by day, provider, model and operation, and
what local models saved against the same tokens on the cheapest hosted model of their tier."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from router.usage.record import COLUMNS
from router.usage.stores import LedgerStore

DIMENSIONS = ("day", "provider", "model", "operation")
_SUMS = ("COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
         "COALESCE(SUM(cost_usd), 0), COALESCE(SUM(cached_input_tokens), 0), "
         "COALESCE(SUM(cache_write_tokens), 0), COALESCE(SUM(reasoning_tokens), 0)")
_WIDTH = 7  # the columns of _SUMS


def _where(user_id: str | None, since: date, until: date, keys: list[str] | None,
           group: str | None = None) -> tuple[str, list[Any]]:
    sql, params = "WHERE day >= ? AND day <= ?", [since.isoformat(), until.isoformat()]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    if group is not None:
        sql += " AND group_id = ?"
        params.append(group)
    tenant, tenant_params = _of_keys(keys)
    return sql + tenant, params + tenant_params


def _of_keys(keys: list[str] | None) -> tuple[str, list[Any]]:
    """The records of a tenant: those its keys sent (None: every tenant's, for admin keys). The
    tenant is derived from api_key_id when read, so the ledger needs no column for it."""
    if keys is None:
        return "", []
    if not keys:
        return " AND 1 = 0", []
    return f" AND api_key_id IN ({', '.join('?' * len(keys))})", list(keys)


def _totals(row: tuple[Any, ...]) -> dict[str, Any]:
    """Input tokens count every prompt token (OpenAI's convention), the cached ones and the cache
    writes included; output tokens the reasoning ones."""
    requests, tokens_in, tokens_out, cost, cached, written, reasoning = row[:_WIDTH]
    return {"requests": int(requests), "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out), "total_tokens": int(tokens_in) + int(tokens_out),
            "cached_input_tokens": int(cached), "cache_write_tokens": int(written),
            "reasoning_tokens": int(reasoning), "cost_usd": round(float(cost), 8)}


async def usage_report(store: LedgerStore, user_id: str | None, since: date,
                       until: date, keys: list[str] | None = None,
                       group: str | None = None) -> dict[str, Any]:
    """`keys`: the caller's tenant's key ids (None: every tenant); `group`: its records only."""
    where, params = _where(user_id, since, until, keys, group)
    (total,) = await store.fetch(
        f"SELECT {_SUMS}, COALESCE(SUM(cache_hits), 0), "
        "COALESCE(SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END), 0) "
        f"FROM usage_records {where}", params)
    report: dict[str, Any] = {
        "user_id": user_id, "group": group, "from": since.isoformat(), "to": until.isoformat(),
        "totals": {**_totals(total), "cache_hits": int(total[_WIDTH]),
                   "errors": int(total[_WIDTH + 1])}}
    for dimension in DIMENSIONS:
        rows = await store.fetch(
            f"SELECT COALESCE({dimension}, 'none') AS k, {_SUMS} FROM usage_records {where} "
            "GROUP BY k ORDER BY k", params)
        report[f"by_{dimension}"] = [{dimension: row[0], **_totals(row[1:])} for row in rows]
    report["savings"] = await _savings(store, where, params)
    return report


async def _savings(store: LedgerStore, where: str, params: list[Any]) -> dict[str, Any]:
    local = "CASE WHEN provider = 'local' THEN {} ELSE 0 END"
    (row,) = await store.fetch(
        f"SELECT COALESCE(SUM({local.format(1)}), 0), "
        f"COALESCE(SUM({local.format('input_tokens + output_tokens')}), 0), "
        "COALESCE(SUM(hosted_equivalent_usd), 0), COALESCE(SUM(savings_usd), 0) "
        f"FROM usage_records {where}", params)
    equivalent, savings = float(row[2]), float(row[3])
    return {"local_requests": int(row[0]), "local_tokens": int(row[1]),
            "local_cost_usd": round(equivalent - savings, 8),
            "hosted_equivalent_usd": round(equivalent, 8), "savings_usd": round(savings, 8),
            "baseline": "the same tokens on the cheapest hosted model of the same tier"}


async def recent_records(store: LedgerStore, user_id: str, limit: int,
                         keys: list[str] | None = None) -> list[dict[str, Any]]:
    """The user's latest ledger records, newest first (of the tenant of `keys`, or of every
    tenant)."""
    tenant, tenant_params = _of_keys(keys)
    rows = await store.fetch(f"SELECT {', '.join(COLUMNS)} FROM usage_records WHERE user_id = ?"
                             f"{tenant} ORDER BY ts DESC LIMIT ?", [user_id, *tenant_params, limit])
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    for record in records:
        record["streamed"] = bool(record["streamed"])
        record["fallback_path"] = json.loads(record["fallback_path"] or "null")
    return records


async def spend_by_user_day(store: LedgerStore,
                            since: str) -> list[tuple[str, str | None, str, str, float]]:
    """(key id, group or None, user, day, cost) of every key's user with spend since `since` (a UTC
    day), per group: what a budget store that starts empty is seeded with."""
    rows = await store.fetch("SELECT api_key_id, group_id, user_id, day, COALESCE(SUM(cost_usd), 0) "
                             "FROM usage_records WHERE day >= ? "
                             "GROUP BY api_key_id, group_id, user_id, day", [since])
    return [(str(key), None if group is None else str(group), str(user), str(day), float(cost))
            for key, group, user, day, cost in rows if cost]
