"""build_app(args): validate the config and bind the serving graph (the `import_path` of serve.yaml)."""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve import Application

from core.config import AppConfig, load_config
from deployments.embed.server import Embedder
from deployments.llm.server import LLMServer
from router.ingress import Router


class MissingGPUs(RuntimeError):
    pass


def check_gpus(config: AppConfig) -> None:
    """A replica asking for GPUs the cluster lacks stays pending forever: refuse to start instead."""
    needed = config.gpus_needed()
    if not needed or not config.require_gpus_at_start or not ray.is_initialized():
        return
    available = ray.cluster_resources().get("GPU", 0.0)
    if available < needed:
        raise MissingGPUs(
            f"this config asks for {needed:g} GPU(s) but the Ray cluster has {available:g}; "
            "use a CPU profile (configs/serve.yaml), add GPU nodes, or set "
            "require_gpus_at_start: false on a cluster that adds them on demand")


def build_graph(config: AppConfig) -> Application:
    check_gpus(config)
    llms = {
        model.name: serve.deployment(LLMServer)
        .options(name=f"LLMServer:{model.name}", **model.serve_options())
        .bind(model, config.local_models_path)
        for model in config.served_local_models()
    }
    embedder = None
    if config.embedder.enabled:
        embedder = (
            serve.deployment(Embedder)
            .options(name="Embedder", user_config=config.embedder.batching.model_dump(),
                     **config.embedder.serve_options())
            .bind(config.embedder, config.local_models_path, config.router.providers.openai)
        )
    return (
        serve.deployment(Router)
        .options(name="Router", **config.router.serve_options())
        .bind(config, llms, embedder)
    )


def build_app(args: dict[str, Any]) -> Application:
    return build_graph(load_config(args))
