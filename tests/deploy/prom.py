"""The real Prometheus server (Debian's package) running the project's scrape config and alert rules
against the test cluster; only the service discovery file's path and the intervals differ."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.deploy.cluster import free_ports, poll, require

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
INTERVAL = "1s"


class Prometheus:
    def __init__(self, directory: Path, service_discovery_file: Path):
        require("prometheus", "promtool")
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
        (job,) = config["scrape_configs"]
        job["file_sd_configs"][0]["files"] = [str(service_discovery_file)]
        for rules in config["rule_files"]:
            shutil.copy(PROMETHEUS_DIR / rules, directory / rules)
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with (self._dir / "prometheus.log").open("wb") as log:
            self._process = subprocess.Popen(
                ["prometheus", f"--config.file={self.config}",
                 f"--storage.tsdb.path={self._dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)
        poll(self._ready, 30, "Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of a scalar-like query, None when it has no result (yet)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def log(self) -> str:
        return (self._dir / "prometheus.log").read_text()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
