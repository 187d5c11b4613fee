"""Model registry: which models exist, where their weights live, and what they are good for."""

from models.registry import (
    LOCAL_EMBEDDING_MODELS,
    LOCAL_MODELS,
    EmbeddingModelSpec,
    LocalModelSpec,
    UnknownModel,
    WeightsNotFound,
    find_embedding_model,
    find_local_model,
    resolve_embedding_gguf,
    resolve_gguf,
)

__all__ = [
    "LOCAL_EMBEDDING_MODELS",
    "LOCAL_MODELS",
    "EmbeddingModelSpec",
    "LocalModelSpec",
    "UnknownModel",
    "WeightsNotFound",
    "find_embedding_model",
    "find_local_model",
    "resolve_embedding_gguf",
    "resolve_gguf",
]
