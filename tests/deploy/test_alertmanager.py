"""deploy/alertmanager/alertmanager.yml with Alertmanager's own amtool: the configuration loads,
critical alerts page and the rest go to the team, and every alert of deploy/prometheus/alerts.yml
reaches a receiver by its severity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.cluster import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
RECEIVER = {"critical": "pager", "warning": "team", "info": "team"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    require("amtool")
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def test_the_configuration_loads() -> None:
    done = amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def alerts() -> list[tuple[str, str]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [(rule["alert"], rule["labels"]["severity"]) for g in groups for rule in g["rules"]]


@pytest.mark.parametrize(("alert", "severity"), alerts())
def test_each_alert_reaches_the_receiver_for_its_severity(alert: str, severity: str) -> None:
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}",
                  f"--verify.receivers={RECEIVER[severity]}", f"alertname={alert}",
                  f"severity={severity}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_receiver_is_refused() -> None:
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=team",
                  "alertname=LearnxServiceDown", "severity=critical")
    assert done.returncode != 0
