"""Providers: thin adapters from GenerationParams/Delta to a model backend, behind one Protocol.

HOSTED is the registry of hosted providers: each reads its key (models/catalog.py: KEY_ENV) and its
settings (core/config.py: ProvidersConfig) and is a candidate only with a key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray.serve.handle import DeploymentHandle

from core.config import AppConfig, HostedProviderConfig
from models.catalog import ProviderName
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.base import Provider
from router.run.providers.local import LocalProvider
from router.run.providers.openai import OpenAIProvider

__all__ = ["HOSTED", "Provider", "build_providers"]

FromEnv = Callable[[HostedProviderConfig, Mapping[str, str]], Provider | None]
HOSTED: dict[ProviderName, FromEnv] = {
    "openai": OpenAIProvider.from_env,
    "anthropic": AnthropicProvider.from_env,
}


def build_providers(config: AppConfig, llm_handles: dict[str, DeploymentHandle[Any]],
                    environ: Mapping[str, str]) -> dict[str, Provider]:
    """The providers that can serve: local when models are deployed, hosted ones with a key."""
    hosted = config.router.providers
    candidates: list[Provider | None] = [
        LocalProvider(llm_handles) if llm_handles else None,
        *(from_env(getattr(hosted, name), environ) for name, from_env in HOSTED.items()),
    ]
    return {p.name: p for p in candidates if p is not None}
