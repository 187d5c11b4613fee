"""Local models: LLMServer deployments reached through Ray Serve handles."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from core.errors import InvalidRequest, ProviderError
from core.generation import Delta, GenerationParams, PromptTooLong


class LocalProvider:
    name = "local"

    def __init__(self, handles: dict[str, DeploymentHandle[Any]]):
        self._handles = handles

    def models(self) -> list[str]:
        return sorted(self._handles)

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        responses = cast(DeploymentResponseGenerator[Delta],
                         self._handles[model].options(stream=True).stream.remote(params))
        try:
            async for delta in responses:
                yield delta
        except Exception as error:
            raise self._translate(model, error) from None
        finally:
            # Closing this generator early (a timeout, a fallback, a client gone) must stop the
            # replica's generation too, or it keeps the model busy for the next request.
            responses.cancel()  # type: ignore[no-untyped-call]

    def _translate(self, model: str, error: Exception) -> Exception:
        if isinstance(error, PromptTooLong):  # RayTaskError subclasses the replica's exception type
            return InvalidRequest(str(getattr(error, "cause", error)), param="messages")
        # A dead or unreachable replica, back-pressure or an engine error: an outage of this model.
        return ProviderError(f"local model failed ({type(error).__name__})",
                             provider=self.name, model=model)
