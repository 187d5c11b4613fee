"""build_app(args): validate the config and bind the serving graph (the `import_path` of serve.yaml)."""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve import Application

from core.config import AppConfig, load_config
from deployments.embed.server import Embedder, EncoderFactory, default_encoder
from deployments.llm.routing import affinity_options
from deployments.llm.server import EngineFactory, LLMServer, default_engine
from router.http.ingress import Router


class MissingGPUs(RuntimeError):
    pass


def check_gpus(config: AppConfig) -> None:
    """A replica asking for GPUs the cluster lacks stays pending forever: refuse to start instead."""
    needed = config.gpus_needed()
    if not needed or not config.require_gpus_at_start or not ray.is_initialized():
        return
    available = ray.cluster_resources().get("GPU", 0.0)  # type: ignore[no-untyped-call]
    if available < needed:
        raise MissingGPUs(
            f"this config asks for {needed:g} GPU(s) but the Ray cluster has {available:g}; "
            "use a CPU profile (configs/serve.yaml), add GPU nodes, or set "
            "require_gpus_at_start: false on a cluster that adds them on demand")


def build_graph(config: AppConfig, engine_factory: EngineFactory = default_engine,
                encoder_factory: EncoderFactory = default_encoder) -> Application:
    """The graph; tests inject a fake engine or encoder (tests/fakes/scripted.py) under real Serve."""
    check_gpus(config)
    # llama.cpp replicas keep the prefixes they computed (vLLM's, their prefix caches): requests
    # that share one go to the replica that holds it.
    llms = {
        model.name: serve.deployment(name=f"LLMServer:{model.name}", **model.serve_options(),
                                     **affinity_options())(
            LLMServer).bind(model, config.local_models_path, engine_factory, config.tracing)
        for model in config.served_local_models()
    }
    embedder = None
    if config.embedder.enabled:
        embedder = serve.deployment(
            name="Embedder", user_config=config.embedder.batching.model_dump(),
            **config.embedder.serve_options())(Embedder).bind(
            config.embedder, config.local_models_path, config.router.providers.openai,
            encoder_factory, breaker=config.router.breaker, tracing=config.tracing)
    router = serve.deployment(name="Router", **config.router.serve_options())(Router)
    return router.bind(config, llms, embedder)


def build_app(args: dict[str, Any]) -> Application:
    return build_graph(load_config(args))
