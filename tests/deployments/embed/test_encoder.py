"""The converted all-MiniLM-L6-v2 on llama.cpp against an independent reference implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deployments.embed.encoder import LlamaCppEncoder, embed_batch
from models import LOCAL_EMBEDDING_MODELS, resolve_embedding_gguf

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "minilm_reference.json"


def reference() -> list[dict]:
    return json.loads(REFERENCE.read_text())["items"]


@pytest.fixture(scope="module")
def encoder() -> LlamaCppEncoder:
    spec = LOCAL_EMBEDDING_MODELS[0]
    return LlamaCppEncoder(spec, resolve_embedding_gguf(spec), n_threads=1)


def test_vectors_agree_with_the_reference_implementation(encoder: LlamaCppEncoder) -> None:
    items = reference()
    vectors = embed_batch(encoder, [i["text"] for i in items], chunk_size=16)
    for item, vector in zip(items, vectors, strict=True):
        expected = np.asarray(item["embedding"])
        cosine = float(vector @ expected / np.linalg.norm(expected))
        assert cosine >= 0.999, item["text"]


def test_vectors_are_normalized_float32(encoder: LlamaCppEncoder) -> None:
    (vector,) = encoder.encode(["unit length"])
    assert vector.dtype == np.float32 and vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-4


def test_batch_order_matches_input_whatever_the_chunking(encoder: LlamaCppEncoder) -> None:
    texts = [f"sentence number {n}" for n in range(7)]
    one_by_one = [encoder.encode([t])[0] for t in texts]
    for chunk in (1, 3, 16):
        for got, want in zip(embed_batch(encoder, texts, chunk), one_by_one, strict=True):
            assert float(got @ want) > 0.9999


def test_text_past_the_models_window_is_truncated_not_refused(encoder: LlamaCppEncoder) -> None:
    long = "photosynthesis " * 600
    (vector,) = encoder.encode([long])
    (prefix,) = encoder.encode(["photosynthesis " * 254])
    assert float(vector @ prefix) > 0.99
