"""The Dockerfiles, read instruction by instruction (no Docker daemon here): each installs with
scripts/setup.sh, the script CI runs (so CI covers what the image installs), copies only what
exists, runs as a non-root user, checks its health on the port the configs serve, and the GPU
image gets a vLLM whose API matches the engine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "deploy" / "Dockerfile", "gpu": ROOT / "deploy" / "Dockerfile.gpu"}
# The first vLLM with vllm.sampling_params.StructuredOutputsParams (deployments/llm/vllm.py).
VLLM_STRUCTURED_OUTPUTS = Version("0.10.2")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for op, args in instructions(path):
        if op == "FROM":
            out.append([])
        out[-1].append((op, args))
    return out


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_build_runs_the_script_ci_runs(kind: str) -> None:
    build, _ = stages(DOCKERFILES[kind])
    runs = [args for op, args in build if op == "RUN"]
    assert "bash scripts/setup.sh" in runs
    ci = (ROOT / ".ci" / "run").read_text() + (ROOT / "scripts" / "test.sh").read_text()
    assert "scripts/setup.sh" in ci
    for op, args in build:
        if op == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            assert all((ROOT / s).exists() for s in sources), args


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_runtime_is_non_root_and_checks_its_health(kind: str) -> None:
    _, runtime = stages(DOCKERFILES[kind])
    ops = dict(runtime)
    assert ops["USER"] not in {"root", "0"}
    assert [op for op, _ in runtime].index("USER") < [op for op, _ in runtime].index("CMD")
    config = ROOT / re.search(r"configs/[\w-]+\.yaml", ops["CMD"])[0]
    port = yaml.safe_load(config.read_text())["http_options"]["port"]
    assert f"http://127.0.0.1:{port}/health" in ops["HEALTHCHECK"]
    assert str(port) in ops["EXPOSE"].split()
    assert "scripts/run.sh" in ops["CMD"]


def test_gpu_image_has_the_gpu_extra_on_cuda() -> None:
    build, runtime = stages(DOCKERFILES["gpu"])
    assert build[0][1].startswith("nvidia/cuda:") and runtime[0][1].startswith("nvidia/cuda:")
    env = " ".join(args for op, args in build if op == "ENV")
    assert re.search(r"LEARNX_EXTRAS=\S*gpu", env) and "GGML_CUDA=on" in env


def test_vllm_floor_has_the_structured_outputs_api() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (vllm,) = [Requirement(r) for r in extras["gpu"] if Requirement(r).name == "vllm"]
    floors = [Version(s.version) for s in vllm.specifier if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= VLLM_STRUCTURED_OUTPUTS
    assert "StructuredOutputsParams" in (ROOT / "deployments" / "llm" / "vllm.py").read_text()


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "var", "models/*.gguf"} <= set(ignored)


def test_every_package_is_installed() -> None:
    """A non-editable install (the images' KubeRay workers import from it) needs every package."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == {pattern.removesuffix("*") for pattern in found["find"]["include"]}


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_run_finds_the_set_up_the_build_made(kind: str) -> None:
    """scripts/run.sh runs scripts/setup.sh first: with other extras it would reinstall at start."""
    def extras(stage: list[tuple[str, str]]) -> set[str]:
        env = " ".join(args for op, args in stage if op == "ENV")
        return set(re.findall(r"LEARNX_EXTRAS=(\S+)", env))

    build, runtime = stages(DOCKERFILES[kind])
    assert len(extras(build)) == 1 and extras(build) == extras(runtime)
