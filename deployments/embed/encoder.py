"""Encoders turn texts into vectors. `embed_batch` is the plain batch function the @serve.batch
method wraps: unit tests call it directly (Serve's batch queue binds to one event loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from models import EmbeddingModelSpec


class Encoder(Protocol):
    model: str
    dims: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dims) float32, L2-normalized."""
        ...


def embed_batch(encoder: Encoder, texts: list[str], chunk_size: int) -> list[np.ndarray]:
    """Vectors for `texts` in order, calling the model `chunk_size` texts at a time."""
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), chunk_size):
        vectors.extend(encoder.encode(texts[start:start + chunk_size]))
    return vectors


class LlamaCppEncoder:
    """A BERT-style GGUF in llama.cpp's embedding mode (mean pooling, normalized)."""

    def __init__(self, spec: EmbeddingModelSpec, path: Path, n_threads: int | None = None):
        from llama_cpp import Llama  # lazy: the [local] extra

        self.model = spec.name
        self.dims = spec.dims
        self._max_tokens = spec.max_seq_tokens
        self._llm = Llama(model_path=str(path), embedding=True, n_ctx=512, n_batch=512,
                          n_ubatch=512, n_threads=n_threads, n_threads_batch=n_threads,
                          verbose=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._llm.embed([self._truncate(t) for t in texts], normalize=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dims)

    def _truncate(self, text: str) -> str:
        """Cut to the model's max_seq_tokens (as the reference does), counting [CLS] and [SEP]."""
        tokens = self._llm.tokenize(text.encode(), add_bos=False)
        if len(tokens) <= self._max_tokens - 2:
            return text
        return self._llm.detokenize(tokens[: self._max_tokens - 2]).decode(errors="ignore")
