"""LLMServer: a Ray Serve deployment hosting one local model through an injected Engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from ray import serve
from ray.serve.exceptions import RayServeException

from core import metrics
from core.config import LocalModelConfig
from core.generation import Delta, EngineBusy, GenerationParams, RequestRejected
from deployments.llm.engine import Engine

log = logging.getLogger("ray.serve")

EngineFactory = Callable[[LocalModelConfig, str | None], Engine]


def default_engine(config: LocalModelConfig, models_path: str | None) -> Engine:
    from models import find_local_model, resolve_gguf

    spec = find_local_model(config.name)
    if config.engine == "vllm":
        from deployments.llm.vllm import VLLMEngine

        return VLLMEngine(spec, config.vllm)
    from deployments.llm.llamacpp import LlamaCppEngine

    return LlamaCppEngine(resolve_gguf(spec, models_path), config.llama_cpp)


class LLMServer:
    """Methods are called through DeploymentHandles by the router's local provider."""

    def __init__(self, config: LocalModelConfig, models_path: str | None = None,
                 engine_factory: EngineFactory = default_engine):
        self.model = config.name
        self._engine = engine_factory(config, models_path)
        self._replica = _replica_id()
        log.info("LLMServer %s ready (%s)", config.name, config.engine)

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta]:
        outcome = "failed"
        self._record_load()
        try:
            async for delta in self._engine.generate(params):
                yield delta
            outcome = "finished"
        except RequestRejected:
            outcome = "rejected"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        except EngineBusy:
            outcome = "busy"
            raise
        finally:
            metrics.record_generation(self.model, self._replica, outcome)
            self._record_load()

    def _record_load(self) -> None:
        load = self._engine.load()
        if load is not None:
            metrics.record_engine_load(self.model, self._replica, load)

    def check_health(self) -> None:
        self._engine.check_health()


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_tag
    except RayServeException:  # constructed outside Serve (tests)
        return "in-process"
