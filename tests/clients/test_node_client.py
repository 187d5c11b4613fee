"""The Node client's tests (clients/node, `npm test`, node:test) against this session's live service:
the full app at / (auth on) and the API-only app at /lite, with the fake hosted providers, which the
Node tests script over their control route. NODE_TEST_ARGS passes arguments to `node --test`
(e.g. `--test-name-pattern=429`)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import API_KEY, CLIENT_LIMITED_KEY
from tests.fakes import FakeAnthropic, FakeOpenAI

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "node"


def test_node_client_passes_its_tests_against_the_live_service(
        serve_url: str, lite_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (CI installs Node 20)")
    if not (PACKAGE / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True)
    env = {**os.environ, "LEARNX_TEST_URL": serve_url, "LEARNX_TEST_LITE_URL": lite_url,
           "LEARNX_TEST_API_KEY": API_KEY, "LEARNX_TEST_LIMITED_KEY": CLIENT_LIMITED_KEY,
           "LEARNX_TEST_FAKE_OPENAI": fake_openai.url,
           "LEARNX_TEST_FAKE_ANTHROPIC": fake_anthropic.url}
    args = shlex.split(os.environ.get("NODE_TEST_ARGS", ""))
    result = subprocess.run(["npm", "test", "--", *args], cwd=PACKAGE, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    print(result.stdout[-3000:])  # the summary, shown with -rP or -s
    assert result.returncode == 0, result.stdout[-30000:]
