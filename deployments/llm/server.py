"""LLMServer: a Ray Serve deployment hosting one local model through an injected Engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from ray import serve
from ray.serve.exceptions import RayServeException

from core import metrics
from core.config import LocalModelConfig
from core.generation import Delta, EngineBusy, EngineLoad, GenerationParams, RequestRejected
from core.tracing import OPERATION, PROVIDER, REQUEST_MODEL, observed, start_tracing
from core.tracing_config import TracingConfig
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
                 engine_factory: EngineFactory = default_engine, tracing: TracingConfig | None = None):
        self.model = config.name
        self._engine_name = config.engine
        self._engine = engine_factory(config, models_path)
        self._replica = _replica_id()
        self.tracing = start_tracing(tracing, "llm") if tracing is not None else None
        log.info("LLMServer %s ready (%s)", config.name, config.engine)

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta]:
        outcome = "failed"
        load = self._record_load()
        try:
            async for delta in self._traced(params, load, self._engine.generate(params)):
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

    def _traced(self, params: GenerationParams, load: EngineLoad | None,
                deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """`deltas` under the request's span here, when the router's attempt was traced."""
        if self.tracing is None or params.trace is None:
            return deltas
        operation = "chat" if params.prompt is None else "text_completion"
        span = self.tracing.child(params.trace, f"generate {self.model}", {
            OPERATION: operation, PROVIDER: self._engine_name, REQUEST_MODEL: self.model,
            "gen_ai.request.max_tokens": params.max_tokens, "learnx.priority": params.priority,
            "learnx.replica": self._replica, "learnx.engine.queued": load.queued if load else 0,
            "learnx.engine.busy": load.busy if load else 0})
        return observed(span, deltas, time.perf_counter(), time.perf_counter) if span else deltas

    def _record_load(self) -> EngineLoad | None:
        load = self._engine.load()
        if load is not None:
            metrics.record_engine_load(self.model, self._replica, load)
        return load

    def check_health(self) -> None:
        self._engine.check_health()


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_tag
    except RayServeException:  # constructed outside Serve (tests)
        return "in-process"
