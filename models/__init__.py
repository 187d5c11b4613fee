"""Model registry: which models exist, where their weights live, and what they are good for."""

from models.registry import (
    LOCAL_MODELS,
    LocalModelSpec,
    ModelNotFound,
    WeightsNotFound,
    find_local_model,
    resolve_gguf,
)

__all__ = [
    "LOCAL_MODELS",
    "LocalModelSpec",
    "ModelNotFound",
    "WeightsNotFound",
    "find_local_model",
    "resolve_gguf",
]
