"""The real nginx (Debian's package) running the project's template in the official nginx image's
layout, on free loopback ports, with everything it writes kept in a directory of the test's own.

The image's layout: nginx.conf includes conf.d/*.conf; conf.d/default.conf ships with the image; at
start the entrypoint renders templates/*.template with envsubst into conf.d/ (a template named
default.conf.template replaces the image's default.conf)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from tests.deploy.cluster import free_ports, poll, require

NGINX_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TEMPLATE = NGINX_DIR / "templates" / "default.conf.template"
# The image's /etc/nginx/conf.d/default.conf (nginx:1.27-alpine), on the test's listen address.
IMAGE_DEFAULT_CONF = """
server {{
    listen {listen};
    server_name localhost;
    location / {{
        root /usr/share/nginx/html;
        index index.html index.htm;
    }}
    error_page 500 502 503 504 /50x.html;
    location = /50x.html {{
        root /usr/share/nginx/html;
    }}
}}
"""
# Stands in for the image's /etc/nginx/nginx.conf: only paths differ (temp files, logs, pid).
MAIN = """
user root;  # ignored unless nginx starts as root; lets workers write the test's own directories
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include conf.d/*.conf;
}}
"""


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image's envsubst does with the defined variables: `${NAME}` -> value."""
    out = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)
    assert "${" not in out
    return out


class Nginx:
    def __init__(self, directory: Path, ai_upstream: str, legacy_upstream: str,
                 resolver: str = "127.0.0.1"):
        require("nginx")
        self.dir = directory
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        listen = f"127.0.0.1:{self.port}"
        self.values = {"LEARNX_AI_UPSTREAM": ai_upstream, "LEGACY_AI_UPSTREAM": legacy_upstream,
                       "NGINX_LISTEN": listen, "AI_ROLLOUT_PERCENT": "10", "NGINX_RESOLVER": resolver}
        (directory / "conf.d").mkdir(parents=True, exist_ok=True)
        (directory / "conf.d" / "default.conf").write_text(IMAGE_DEFAULT_CONF.format(listen=listen))
        shutil.copytree(NGINX_DIR / "templates", directory / "templates", dirs_exist_ok=True)
        shutil.copytree(NGINX_DIR / "learnx", directory / "learnx", dirs_exist_ok=True)
        (directory / "nginx.conf").write_text(MAIN.format(dir=directory))
        self.process: subprocess.Popen[bytes] | None = None

    def _write(self, rollout_percent: int) -> None:
        """The image entrypoint's step: every templates/NAME.template -> conf.d/NAME."""
        self.values["AI_ROLLOUT_PERCENT"] = str(rollout_percent)
        for template in (self.dir / "templates").glob("*.template"):
            rendered = render(template.read_text(), self.values)
            (self.dir / "conf.d" / template.name.removesuffix(".template")).write_text(rendered)
        self._nginx("-t")

    def _nginx(self, *args: str) -> None:
        done = subprocess.run(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                               *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def start(self, rollout_percent: int = 10) -> Nginx:
        self._write(rollout_percent)
        self.process = subprocess.Popen(["nginx", "-p", str(self.dir), "-c",
                                         str(self.dir / "nginx.conf"), "-g", "daemon off;"])
        poll(self._up, 10, "nginx to listen")
        return self

    def set_rollout(self, percent: int) -> None:
        """The operator's switch: change the one variable, reload; wait until new workers answer."""
        self._write(percent)
        old = self._workers()
        self._nginx("-s", "reload")
        # Live once the workers of the old configuration have finished and gone.
        poll(lambda: not old & self._workers(), 10, "the old nginx workers to exit")
        assert self._rollout() == str(percent)

    def _workers(self) -> set[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return {int(pid) for pid in children.split()}

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/nginx-health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _rollout(self) -> str | None:
        response = httpx.get(f"{self.url}/api/v1/ai/health", timeout=5)
        return response.headers.get("x-ai-rollout")

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
