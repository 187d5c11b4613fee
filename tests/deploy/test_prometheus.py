"""The real Prometheus, with the project's scrape config and alert rules, scraping the two-node
cluster: traffic of known shape moves the scraped metrics by exactly what it should; every alert rule
and every Grafana panel query evaluates without error, over metrics that exist."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.cluster import poll, require
from tests.deploy.conftest import HEADERS, LIMITED_KEY, App, chat
from tests.deploy.prom import PROMETHEUS_DIR, Prometheus
from tests.fakes import FakeOpenAI, Fault, Reply

DASHBOARD = PROMETHEUS_DIR.parent / "grafana" / "dashboards" / "learnx-ai.json"
# Grafana's own variables, as it would fill them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Counted only when something goes wrong that this test cannot provoke on a healthy cluster.
NEVER_HAPPENED = {"ray_learnx_ledger_dropped_total", "ray_learnx_ledger_dead_lettered_total",
                  "ray_learnx_ledger_write_failures_total"}


@pytest.fixture(scope="module")
def prometheus(cluster_app: App, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"),
                        cluster_app.cluster.service_discovery_file).start()
    yield server
    server.stop()


def s(metric: str, **labels: str) -> str:
    """sum(metric{labels}), 0 when the series does not exist yet."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"sum({metric}{{{selector}}}) or vector(0)"


CHAT = {"operation": "chat.completions"}
LOCAL = {**CHAT, "provider": "local", "model": "smollm2-135m"}
MINI = {**CHAT, "provider": "openai", "model": "gpt-4o-mini"}
GPT4O = {**CHAT, "provider": "openai", "model": "gpt-4o"}
EMBED = {"operation": "embeddings", "provider": "local", "model": "all-minilm-l6-v2"}
COST_MINI, COST_4O = (10 * 0.15 + 20 * 0.60) / 1e6, (10 * 2.50 + 20 * 10.00) / 1e6  # per reply
EXPECTED = {  # query -> how much the traffic below moves it
    s("ray_learnx_requests_total", **LOCAL, status="200"): 5,
    s("ray_learnx_requests_total", **MINI, status="200"): 2,
    s("ray_learnx_requests_total", **GPT4O, status="200"): 1,
    s("ray_learnx_requests_total", **GPT4O, status="503", outcome="error"): 1,
    s("ray_learnx_requests_total", **CHAT, provider="none", status="402"): 1,
    s("ray_learnx_requests_total", **CHAT, provider="none", status="429"): 1,
    s("ray_learnx_requests_total", **EMBED, status="200"): 2,
    s("ray_learnx_tokens_total", **MINI, direction="input"): 20,
    s("ray_learnx_tokens_total", **MINI, direction="output"): 40,
    s("ray_learnx_cost_usd_total", **MINI): 2 * COST_MINI,
    s("ray_learnx_cost_usd_total", **GPT4O): COST_4O,
    s("ray_learnx_time_to_first_token_seconds_count", **MINI): 2,
    s("ray_learnx_request_latency_seconds_count", **LOCAL): 5,
    s("ray_learnx_fallbacks_total", **LOCAL): 1,
    s("ray_learnx_retries_total", **GPT4O): 2,  # one retry answered, one failed again
    s("ray_learnx_provider_errors_total", provider="openai", model="gpt-4o-mini", status="500"): 1,
    s("ray_learnx_provider_errors_total", provider="openai", model="gpt-4o", status="500"): 3,
    s("ray_learnx_circuit_breaker_opened_total", provider="openai", model="gpt-4o"): 1,
    s("ray_learnx_budget_actions_total", **CHAT, action="refused"): 1,
    s("ray_learnx_budget_actions_total", **CHAT, action="downgraded"): 1,
    s("ray_learnx_rate_limited_total", scope="key", kind="requests"): 1,
    s("ray_learnx_embedding_cache_total", model="all-minilm-l6-v2", result="miss"): 4,
    s("ray_learnx_embedding_cache_total", model="all-minilm-l6-v2", result="hit"): 4,
}


def snapshot(prom: Prometheus) -> dict[str, float]:
    return {query: prom.value(query) or 0.0 for query in EXPECTED}


def settled(prom: Prometheus) -> dict[str, float]:
    """Values once every expected series is exported and two scrapes a few seconds apart agree."""
    last: list[dict[str, float]] = []

    def stable() -> dict[str, float] | None:
        last.append(snapshot(prom))
        present = all(prom.query(q.removesuffix(" or vector(0)")) for q in EXPECTED)
        return last[-1] if present and len(last) > 1 and last[-1] == last[-2] else None

    return poll(stable, 60, "the scraped metrics to settle", every_s=3)


def send_traffic(url: str, fake: FakeOpenAI, limited_statuses: tuple[int, ...]) -> None:
    def ok(response: httpx.Response, status: int = 200) -> None:
        assert response.status_code == status, response.text

    for _ in range(3):
        ok(chat(url))
    for _ in range(2):
        fake.enqueue(Reply(text="one two three", prompt_tokens=10, completion_tokens=20))
        ok(chat(url, model="gpt-4o-mini", stream=True, stream_options={"include_usage": True}))
    fake.enqueue(Fault(status=500))  # gpt-4o-mini fails, the local model of its tier answers
    ok(chat(url, model="gpt-4o-mini"))
    fake.enqueue(Fault(status=500), Reply(prompt_tokens=10, completion_tokens=20))
    ok(chat(url, model="gpt-4o"))  # the only large model: retried, then answers
    fake.enqueue(Fault(status=500), Fault(status=500))  # fails twice: its breaker opens
    ok(chat(url, model="gpt-4o"), 503)
    ok(chat(url, model="gpt-4o-mini", user="deploy-refused"), 402)
    ok(chat(url, model="small", user="deploy-downgraded", preferred_providers=["openai"]))
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    body = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    for status in limited_statuses:  # the key allows one request a minute
        ok(httpx.post(f"{url}/v1/chat/completions", json=body, headers=limited, timeout=60), status)
    texts = [f"metrics {uuid.uuid4().hex}" for _ in range(4)]
    for _ in range(2):  # four misses, then four hits
        ok(httpx.post(f"{url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts},
                      headers=HEADERS, timeout=60))


def test_scraped_values_follow_the_traffic(cluster_app: App, prometheus: Prometheus,
                                           fake_openai: FakeOpenAI) -> None:
    poll(lambda: all(t["health"] == "up" for t in prometheus.api("targets")["activeTargets"]),
         30, "every Ray node's metrics endpoint to be scraped")
    # The second round is measured. After the first, every series exists and is current: series
    # of a replica that has been quiet (after earlier tests) were seen to come back only at its
    # next report, with totals that include the earlier traffic.
    send_traffic(cluster_app.url, fake_openai, limited_statuses=(200, 429))
    httpx.post(f"{cluster_app.url}/health/providers/reset", headers=HEADERS, timeout=10)
    before = settled(prometheus)
    send_traffic(cluster_app.url, fake_openai, limited_statuses=(429,))
    want = {q: before[q] + delta for q, delta in EXPECTED.items()}

    def arrived() -> bool:
        now = snapshot(prometheus)
        return all(now[q] >= want[q] - 1e-12 for q in want)

    try:
        poll(arrived, 60, "the traffic in the scraped metrics", every_s=1)
    finally:
        httpx.post(f"{cluster_app.url}/health/providers/reset", headers=HEADERS, timeout=10)
    after = settled(prometheus)
    wrong = {q: (after[q] - before[q], d) for q, d in EXPECTED.items()
             if abs(after[q] - before[q] - d) > 1e-9}
    assert not wrong, "scraped change != expected change:\n" + "\n".join(
        f"{q}: {got} != {d}" for q, (got, d) in wrong.items())

    # Open (2) until the reset above closed it (0).
    breaker = 'max(max_over_time(ray_learnx_circuit_breaker_state{model="gpt-4o"}[5m]))'
    assert prometheus.value(breaker) == 2
    # The gauge's 0 arrives with the replica's next report: under load that can take a while.
    poll(lambda: prometheus.value('max(ray_learnx_circuit_breaker_state{model="gpt-4o"})') == 0,
         60, "the breaker gauge back at 0 after the reset", every_s=1)
    batches = prometheus.value("sum(ray_learnx_embedding_batch_size_count)")
    assert batches is not None and batches >= 1
    assert prometheus.value("sum(ray_learnx_ledger_buffered_records)") is not None
    healthy = prometheus.query("sum by (deployment) (ray_serve_deployment_replica_healthy)")
    assert {r["metric"]["deployment"] for r in healthy} == {"Router", "Embedder",
                                                            "LLMServer:smollm2-135m"}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bray_\w+", expr))


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def unknown(prom: Prometheus, names: set[str]) -> set[str]:
    """Those of `names` that Prometheus has no series of."""
    return names - NEVER_HAPPENED - not_yet_defined(names) - set(prom.api("label/__name__/values"))


def not_yet_defined(names: set[str]) -> set[str]:
    """The local engines' queue gauges the dashboard shows, while core/metrics.py does not define
    them yet (they are being added there); once it does, they are checked like every other name."""
    metrics = (Path(__file__).resolve().parents[2] / "core" / "metrics.py").read_text()
    pending = {"ray_learnx_llm_queue_depth", "ray_learnx_llm_slots_busy",
               "ray_learnx_llm_estimated_wait_seconds"}
    return {n for n in names & pending if f'"{n.removeprefix("ray_")}"' not in metrics}


def test_every_dashboard_query_evaluates(prometheus: Prometheus) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    names: set[str] = set()
    for title, expr in queries:
        prometheus.query(expr)  # asserts status "success"
        found = metric_names(expr)
        assert found, f"{title}: no metric in {expr}"
        names |= found
    assert not unknown(prometheus, names), "panels query metrics nobody exports"


def test_every_alert_rule_loads_and_evaluates(prometheus: Prometheus) -> None:
    groups = poll(lambda: prometheus.api("rules")["groups"], 30, "the rules to load")
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 13
    poll(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in
                     (x for g in prometheus.api("rules")["groups"] for x in g["rules"])),
         30, "every rule to be evaluated")
    for rule in (x for g in prometheus.api("rules")["groups"] for x in g["rules"]):
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    names = set().union(*(metric_names(r["query"]) for r in rules))
    assert not unknown(prometheus, names), "alerts on metrics nobody exports"


@pytest.mark.parametrize("command", [["check", "rules", "alerts.yml"],
                                     ["test", "rules", "alerts.test.yml"],
                                     ["check", "config", "prometheus.yml"]])
def test_promtool(command: list[str]) -> None:
    require("promtool")
    done = subprocess.run(["promtool", *command], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    """Panels name the datasource through a variable, so the dashboard imports into any Grafana."""
    root = PROMETHEUS_DIR.parent / "grafana"
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    used = [p["datasource"] for p in dashboard["panels"] if "datasource" in p]
    used += [t["datasource"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert {(d["type"], d["uid"]) for d in used} == {("prometheus", "${datasource}")}
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource", "datasource", "prometheus")
    assert Path(root / "provisioning" / "dashboards" / "learnx.yml").is_file()
