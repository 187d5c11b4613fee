"""Embeddings in process: both wire formats, input order, cache and deduplication, and the limits,
through the Embedder on the fake encoder."""

from __future__ import annotations

import base64

import numpy as np

from tests.fakes.inprocess import InProcess


async def test_openai_format_keeps_input_order_in_float_and_base64(api: InProcess) -> None:
    texts = ["cells", "atoms", "stars"]
    floats = (await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2",
                                                "input": texts})).json()
    packed = (await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts,
                                                "encoding_format": "base64"})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1, 2]
    for as_float, as_base64 in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(as_base64["embedding"]), "<f4")
        assert np.allclose(decoded, as_float["embedding"])
    assert floats["model"] == "all-minilm-l6-v2"


async def test_the_seed_format_reports_cache_hits_and_duplicates(api: InProcess) -> None:
    body = {"texts": ["a cell", "a  cell", "an atom"]}
    first = (await api.post("/api/v1/ai/embeddings", body)).json()
    again = (await api.post("/api/v1/ai/embeddings", body)).json()
    assert (first["deduplicated"], first["cache_hits"]) == (1, 0)
    assert (again["deduplicated"], again["cache_hits"]) == (1, 2)
    assert first["embeddings"][0] == first["embeddings"][1] == again["embeddings"][0]
    assert first["dims"] == 384 and first["count"] == 3


async def test_other_dimensions_for_the_local_model_is_a_400(api: InProcess) -> None:
    response = await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x",
                                                 "dimensions": 128})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"


async def test_too_many_texts_is_a_422(api: InProcess) -> None:
    response = await api.post("/api/v1/ai/embeddings", {"texts": ["x"] * 3000})
    assert response.status_code == 422


async def test_an_unknown_model_is_a_404(api: InProcess) -> None:
    response = await api.post("/v1/embeddings", {"model": "word2vec", "input": "x"})
    assert response.status_code == 404
