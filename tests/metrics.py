"""Read the service's Ray metrics as Prometheus would: from the metrics agent of the session's Ray
node (the suite's Ray reports them every 500 ms; see tests/conftest.py)."""

from __future__ import annotations

import re

import httpx
import ray

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def samples(name: str) -> list[tuple[dict[str, str], float]]:
    """Every series of the metric `name` (Ray prefixes ours with `ray_`), with its labels."""
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            found.append((labels, float(match["value"])))
    return found


def total(name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels`."""
    return sum(value for have, value in samples(name)
               if all(have.get(k) == v for k, v in labels.items()))
