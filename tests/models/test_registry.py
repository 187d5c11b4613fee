"""The model registry: names and aliases, and where weights are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import UnknownModel, WeightsNotFound, find_local_model, resolve_gguf


def test_aliases_resolve_to_the_model() -> None:
    assert find_local_model("smollm2").name == "smollm2-135m"
    assert find_local_model("llama3-8b").gguf_file == "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf"


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModel, match="mistral-7b"):
        find_local_model("gpt-2")


def test_packaged_model_is_found_without_importing_its_package() -> None:
    path = resolve_gguf(find_local_model("smollm2-135m"), models_path="")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_local_models_path_wins(tmp_path: Path) -> None:
    own = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    own.write_bytes(b"GGUF")
    assert resolve_gguf(find_local_model("smollm2"), models_path=str(tmp_path)) == own


def test_missing_weights_say_where_we_looked(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match=str(tmp_path / "mistral-7b-instruct")):
        resolve_gguf(find_local_model("mistral-7b"), models_path=str(tmp_path))
