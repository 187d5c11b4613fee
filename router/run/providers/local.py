"""Local models: LLMServer deployments reached through Ray Serve handles."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from core.errors import ContextExceeded, InvalidRequest, ModelBusy, ProviderError, ServiceError
from core.generation import (
    Delta,
    EngineBusy,
    GenerationParams,
    PromptTooLong,
    RequestRejected,
)


class LocalProvider:
    name = "local"

    def __init__(self, handles: dict[str, DeploymentHandle[Any]]):
        self._handles = handles

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        responses = cast(DeploymentResponseGenerator[Delta],
                         self._handles[model].options(stream=True).stream.remote(params))
        try:
            async for delta in responses:
                yield delta
        except Exception as error:
            raise engine_error(self.name, model, error) from None
        finally:
            # Closing this generator early (a timeout, a fallback, a client gone) must stop the
            # replica's generation too, or it keeps the model busy for the next request.
            responses.cancel()  # type: ignore[no-untyped-call]


def engine_error(provider: str, model: str, error: Exception) -> ServiceError:
    """What an engine's failure means to the router, by type: a request the engine rejects is the
    caller's (a 400, not retried, not counted by the breaker), a prompt too long for this model
    only while no other candidate fits it; anything else is an outage."""
    if isinstance(error, PromptTooLong):  # RayTaskError subclasses the replica's exception type
        return ContextExceeded(str(getattr(error, "cause", error)), param=error.param)
    if isinstance(error, EngineBusy):  # across Serve, a RayTaskError whose cause is the original
        cause = getattr(error, "cause", error)
        return ModelBusy(f"{model} is busy: {cause}; retry later",
                         retry_after=getattr(cause, "retry_after_s", 1.0))
    if isinstance(error, RequestRejected):
        return InvalidRequest(str(getattr(error, "cause", error)), param=error.param)
    # A dead or unreachable replica, back-pressure or an engine error: an outage of this model.
    return ProviderError(f"local model failed ({type(error).__name__})", provider=provider,
                         model=model)
