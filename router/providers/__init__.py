"""Providers: thin adapters from GenerationParams/Delta to a model backend, behind one Protocol."""

from router.providers.base import Provider

__all__ = ["Provider"]
