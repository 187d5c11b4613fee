"""Providers: thin adapters from GenerationParams/Delta to a model backend, behind one Protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve.handle import DeploymentHandle

from core.config import AppConfig
from router.run.providers.base import Provider

__all__ = ["Provider", "build_providers"]


def build_providers(config: AppConfig, llm_handles: dict[str, DeploymentHandle[Any]],
                    environ: Mapping[str, str]) -> dict[str, Provider]:
    """The providers that can serve: local when models are deployed, hosted ones with a key."""
    from router.run.providers.anthropic import AnthropicProvider
    from router.run.providers.local import LocalProvider
    from router.run.providers.openai import OpenAIProvider

    hosted = config.router.providers
    candidates: list[Provider | None] = [
        LocalProvider(llm_handles) if llm_handles else None,
        OpenAIProvider.from_env(hosted.openai, environ),
        AnthropicProvider.from_env(hosted.anthropic, environ),
    ]
    return {p.name: p for p in candidates if p is not None}
