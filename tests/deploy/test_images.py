"""The Dockerfiles, read instruction by instruction: each installs with scripts/setup.sh, the script
CI runs (so CI covers what the image installs), copies every package and only what exists, installs
its dependencies before copying the code (a code change does not compile llama.cpp again), builds
llama.cpp portably, runs as a non-root user with the code read-only, checks its health on the port
the configs serve, and the GPU image gets a pinned vLLM whose API matches the engine and whose torch
matches the CUDA base. tests/deploy/test_image.py builds and runs the CPU image for real."""

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
CONSTRAINTS = ROOT / "deploy" / "constraints-gpu.txt"
RAY_VERSION = "2.60.0"  # the KubeRay manifests' rayVersion
SETUP_INPUTS = {"pyproject.toml", "scripts/setup.sh", "scripts/convert_minilm.py",
                "deploy/constraints-gpu.txt"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the ARGs before the first FROM are in none)."""
    out: list[list[tuple[str, str]]] = []
    for op, args in instructions(path):
        if op == "FROM":
            out.append([])
        if out:
            out[-1].append((op, args))
    return out


def base(path: Path, stage: list[tuple[str, str]]) -> str:
    """The stage's FROM image, its ${ARG} replaced by the ARG's default."""
    defaults = dict(args.split("=", 1) for op, args in instructions(path) if op == "ARG" and "=" in args)
    image = stage[0][1].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], image)


def context_dirs() -> set[str]:
    """The top-level folders `COPY . .` brings in: those .dockerignore does not leave out."""
    patterns = [p for p in (ROOT / ".dockerignore").read_text().split() if not p.startswith("#")]
    left_out = {p.rstrip("/") for p in patterns if not p.startswith("!") and "*" not in p}
    return {d.name for d in ROOT.iterdir() if d.is_dir()} - left_out


def run_command(args: str) -> str:
    """A RUN's command without its --mount options."""
    return re.sub(r"^(--mount=\S+\s+)+", "", args)


def packages() -> set[str]:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return {pattern.removesuffix("*") for pattern in found["find"]["include"]}


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_build_runs_the_script_ci_runs(kind: str) -> None:
    build, _ = stages(DOCKERFILES[kind])
    runs = [run_command(args) for op, args in build if op == "RUN"]
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


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_every_package_is_copied_after_the_dependencies(kind: str) -> None:
    build, _ = stages(DOCKERFILES[kind])
    ops = [(op, run_command(args)) for op, args in build]
    setup = ops.index(("RUN", "bash scripts/setup.sh"))
    copied: dict[str, int] = {}
    for at, (op, args) in enumerate(ops):
        if op == "COPY":
            for source in args.split()[:-1]:
                names = context_dirs() if source == "." else {source.rstrip("/")}
                copied.update(dict.fromkeys(names, at))
    for package in packages():
        assert package in copied, f"{package}/ is not copied into the {kind} image"
        assert copied[package] > setup, f"{package}/ is copied before the dependencies install"
    # What setup.sh reads is all it gets: a change elsewhere (code, docs) reuses the install layer.
    before = {src for op, args in ops[:setup] if op == "COPY" for src in args.split()[:-1]}
    assert before <= SETUP_INPUTS, before - SETUP_INPUTS


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_llama_cpp_is_built_portably(kind: str) -> None:
    build, _ = stages(DOCKERFILES[kind])
    env = " ".join(args for op, args in build if op == "ENV")
    assert "-DGGML_NATIVE=OFF" in re.search(r'CMAKE_ARGS="([^"]*)"', env)[1]


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_runtime_has_what_llama_cpp_loads_and_code_is_read_only(kind: str) -> None:
    _, runtime = stages(DOCKERFILES[kind])
    installs = " ".join(args for op, args in runtime if op == "RUN")
    assert "libgomp1" in installs
    copy = next(args for op, args in runtime if op == "COPY")
    assert copy.startswith("--from=build") and "--chown" not in copy
    assert re.search(r"chown learnx:learnx /app/var\b", installs)


def test_cpu_base_is_an_argument_defaulting_to_the_public_image() -> None:
    lines = DOCKERFILES["cpu"].read_text().splitlines()
    assert [line for line in lines if line.startswith("FROM")] == [
        "FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    assert {base(DOCKERFILES["cpu"], stage) for stage in stages(DOCKERFILES["cpu"])} == {
        "python:3.11-slim-bookworm"}


def test_gpu_image_has_the_gpu_extra_on_cuda() -> None:
    build, runtime = stages(DOCKERFILES["gpu"])
    assert base(DOCKERFILES["gpu"], build).startswith("nvidia/cuda:")
    assert base(DOCKERFILES["gpu"], runtime).startswith("nvidia/cuda:")
    env = " ".join(args for op, args in build if op == "ENV")
    assert re.search(r"LEARNX_EXTRAS=\S*gpu", env) and "GGML_CUDA=on" in env
    # No GPU in a build: the architectures are named, not detected.
    assert re.search(r"-DCMAKE_CUDA_ARCHITECTURES=[\d;]+", env)
    installs = " ".join(args for op, args in runtime if op == "RUN")
    assert {"gcc", "python3-dev"} <= set(installs.split()), "Triton compiles at vLLM's start"


def test_gpu_constraints_pin_vllm_and_a_torch_for_the_cuda_base() -> None:
    """deploy/constraints-gpu.txt is pip's resolution of the [gpu] extra for the base's CUDA."""
    build, runtime = stages(DOCKERFILES["gpu"])
    pins = dict(line.split("==") for line in CONSTRAINTS.read_text().split("\n")
                if line and not line.startswith("#"))
    assert "PIP_CONSTRAINT=/app/deploy/constraints-gpu.txt" in " ".join(
        args for op, args in build if op == "ENV")
    assert Version(pins["vllm"]) >= VLLM_STRUCTURED_OUTPUTS and "torch" in pins
    cuda = {re.search(r"cuda:(\d+\.\d+)", base(DOCKERFILES["gpu"], stage))[1]
            for stage in (build, runtime)}
    assert len(cuda) == 1
    (runtime_pin,) = [v for name, v in pins.items() if name == "nvidia-cuda-runtime-cu12"]
    assert runtime_pin.startswith(cuda.pop() + "."), "torch's CUDA is not the base's"
    assert not [name for name in pins if "cu13" in name or name == "cuda-toolkit"]
    assert pins["ray"] == RAY_VERSION


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
    """pyproject.toml finds every package: the install (editable, in the images too) maps only those."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk == packages()


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_run_finds_the_set_up_the_build_made(kind: str) -> None:
    """scripts/run.sh runs scripts/setup.sh first: with other extras it would reinstall at start."""
    def extras(stage: list[tuple[str, str]]) -> set[str]:
        env = " ".join(args for op, args in stage if op == "ENV")
        return set(re.findall(r"LEARNX_EXTRAS=(\S+)", env))

    build, runtime = stages(DOCKERFILES[kind])
    assert len(extras(build)) == 1 and extras(build) == extras(runtime)
