"""The CPU image (deploy/Dockerfile) run for real: its own command with the default profile
(configs/cpu.yaml), as the non-root user, under the 1,024 file descriptors `buildah run` gives a
container, healthy by its own HEALTHCHECK command, serving a chat completion from the packaged
SmolLM2 and an embedding from MiniLM.

scripts/image_test.sh builds the image (scripts/image.sh) and runs this file with LEARNX_IMAGE set:
CI runs it as a step of its own. Without LEARNX_IMAGE the module is skipped (the build takes minutes).

The container runs in a network namespace of its own, with a Redis of its own inside (the profile
caches embeddings in Redis): its fixed ports (8001, Ray's) cannot meet another Ray on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router.http.auth import hash_key
from tests.deploy.cluster import require

IMAGE = os.environ.get("LEARNX_IMAGE", "")
CACHE = os.environ.get("LEARNX_IMAGE_CACHE", "/var/cache/learnx")
KEY = "lx_image-test-key-0123456789abcdef0123"
pytestmark = pytest.mark.skipif(not IMAGE, reason="no LEARNX_IMAGE: run scripts/image_test.sh")


def buildah(*args: str) -> list[str]:
    return ["buildah", "--storage-driver", "vfs", "--root", f"{CACHE}/storage",
            "--runroot", f"{CACHE}/run", *args]


def run(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@dataclass
class Container:
    name: str
    netns: str
    config: dict[str, Any]
    log: Path

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`command` in the running container's filesystem, user and network."""
        return run("ip", "netns", "exec", self.netns,
                   *buildah("run", "--isolation", "chroot", self.name, "--", *command),
                   timeout=timeout)

    def http(self, path: str, body: dict[str, Any], request_id: str = "") -> dict[str, Any]:
        """POST from inside the container's network, as a client next to it would."""
        headers = ["-H", f"X-Request-Id: {request_id}"] if request_id else []
        done = run("ip", "netns", "exec", self.netns, "curl", "-sS", "--fail-with-body",
                   "--max-time", "120", "-H", f"Authorization: Bearer {KEY}", *headers,
                   "-H", "Content-Type: application/json", "-d", json.dumps(body),
                   f"http://127.0.0.1:8001{path}", timeout=130)
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout))

    def healthy(self) -> bool:
        kind, *command = self.config["Healthcheck"]["Test"]
        assert kind == "CMD"
        return self.exec(*command, timeout=30).returncode == 0

    def processes(self) -> list[str]:
        names = []
        for pid in run("ip", "netns", "pids", self.netns).stdout.split():
            with contextlib.suppress(OSError):  # it exited meanwhile
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        return names


def poll_healthy(container: Container, server: subprocess.Popen[bytes], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        assert server.poll() is None, f"the container exited:\n{container.log.read_text()[-4000:]}"
        if container.healthy():
            return time.monotonic() - started
        time.sleep(5)
    raise AssertionError(f"not healthy after {timeout_s:g} s:\n{container.log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    require("buildah")
    inspected = json.loads(run(*buildah("inspect", "--type", "image", IMAGE)).stdout)
    name = netns = f"learnx-image-test-{os.getpid()}"
    log = tmp_path_factory.mktemp("image") / "container.log"
    box = Container(name, netns, inspected["Docker"]["config"], log)
    assert run("ip", "netns", "add", netns).returncode == 0
    run("ip", "-n", netns, "link", "set", "lo", "up")
    redis = subprocess.Popen(["ip", "netns", "exec", netns, "redis-server", "--bind", "127.0.0.1",
                              "--port", "6379", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    server: subprocess.Popen[bytes] | None = None
    try:
        assert run(*buildah("from", "--name", name, IMAGE)).returncode == 0
        started = time.monotonic()
        with log.open("wb") as out:
            server = subprocess.Popen(
                ["ip", "netns", "exec", netns,
                 *buildah("run", "--isolation", "chroot",
                          "--env", f"LEARNX_API_KEYS=image-test:{hash_key(KEY)}", name, "--",
                          *box.config["Cmd"])],
                stdout=out, stderr=subprocess.STDOUT)
        took = poll_healthy(box, server, 600)
        print(f"\nimage {IMAGE}: healthy by its HEALTHCHECK {took:.0f} s after start "
              f"({time.monotonic() - started:.0f} s)")
        yield box
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        redis.terminate()
        redis.wait(timeout=10)
        # What is left in the namespace was started by this fixture (the container's processes).
        for pid in run("ip", "netns", "pids", netns).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        run(*buildah("rm", name))
        run("ip", "netns", "del", netns)


def test_runs_as_its_user_with_code_read_only(container: Container) -> None:
    checks = "id -u; test -w /app/var && echo var-writable; test -w /app/core || echo code-read-only"
    done = container.exec("sh", "-c", checks)
    assert done.stdout.split() == ["1000", "var-writable", "code-read-only"], done.stderr


def test_haproxy_ingress_within_1024_file_descriptors(container: Container) -> None:
    assert container.exec("sh", "-c", "ulimit -Hn").stdout.strip() == "1024"
    assert "haproxy" in container.processes()
    assert "HAProxy ingress limited to" in container.log.read_text()


def test_serves_a_chat_completion(container: Container) -> None:
    reply = container.http("/v1/chat/completions", {
        "model": "smollm2-135m", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hi."}]})
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] > 0


def test_serves_an_embedding(container: Container) -> None:
    reply = container.http("/v1/embeddings", {"model": "all-minilm-l6-v2",
                                              "input": ["Photosynthesis makes sugar."]})
    (item,) = reply["data"]
    assert len(item["embedding"]) == 384


def test_healthcheck_fails_when_the_service_is_down(container: Container) -> None:
    """The HEALTHCHECK command really checks: pointed at a port nothing serves, it fails."""
    _, *command = container.config["Healthcheck"]["Test"]
    elsewhere = [part.replace(":8001/", ":8002/") for part in command]
    assert elsewhere != command, shlex.join(command)
    assert container.exec(*elsewhere, timeout=30).returncode != 0


def test_logs_are_json_with_the_request_id(container: Container) -> None:
    request_id = f"image-test-{uuid.uuid4().hex}"
    container.http("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["Cells divide."]},
                   request_id=request_id)
    logs = container.exec("sh", "-c", "cat /tmp/ray/session_latest/logs/serve/replica_*.log").stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) == len(lines), [line for line in lines if line[0] != "{"]
    ours = [r for r in records if r.get("request_id") == request_id]
    assert ours, f"no log record carries {request_id}"
    assert all(r.get("route") == "/v1/embeddings" for r in ours), ours
