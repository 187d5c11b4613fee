"""The Router deployment: the ingress of the Serve graph. It turns the deployment handles it is bound
to into the API's services and serves the API built from them (Serve calls
`__serve_build_asgi_app__` after the constructor)."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from core.config import AppConfig
from router.http.api import build_api
from router.http.auth import check_exposure
from router.run.providers import build_providers
from router.services.embeddings import HandleEmbedder
from router.services.readiness import HealthCheck
from router.services.wiring import Services, build_services

log = logging.getLogger("ray.serve")


def http_host() -> str | None:
    """The host Serve's HTTP proxies bind (http_options.host)."""
    from ray.serve.context import _get_global_client  # no public API says it

    client = _get_global_client()
    host: str | None = client.http_config.host if client is not None else None
    return host


def health_check(handle: DeploymentHandle[Any]) -> HealthCheck:
    async def check() -> None:
        await handle.check_health.remote()
    return check


@serve.ingress()
class Router:
    def __init__(self, config: AppConfig, llm_handles: dict[str, DeploymentHandle[Any]],
                 embedder: DeploymentHandle[Any] | None = None):
        check_exposure(config.auth, http_host())
        providers = build_providers(config, llm_handles, os.environ)
        readiness = {name: health_check(h) for name, h in llm_handles.items()}
        if embedder is not None:
            readiness["embedder"] = health_check(embedder)
        self.services: Services = build_services(
            config, providers, HandleEmbedder(embedder) if embedder else None, readiness)
        log.info("router ready; providers: %s", ", ".join(providers) or "none")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.services)

    async def __del__(self) -> None:
        """Serve's graceful shutdown: write what the ledger still buffers."""
        await self.services.close()
