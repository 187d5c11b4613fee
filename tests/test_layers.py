"""The layer rule of DESIGN.md, enforced: imports point down only, and no module imports itself back
through others (TYPE_CHECKING and function-level imports count too).

    1  content, models   the domain: pure Python, each importing only itself
    2  core              errors, breakers, pricing, generation types, config, SDK boundary
    3  deployments       engines and replicas (deployments.llm, deployments.embed)
    4  router.wire       the wire models: OpenAI and LEARN-X bodies, parameters, SSE
    5  router.run        one request's run: policy, fallback, attempts, first-token limits, providers
    6  router.usage      metering, the ledger, budgets, rate limits, shared state
    7  router.services   one service per route family, and their wiring
    8  router.http       the ingress: the app, routes, OpenAPI, auth, limits, idempotency
    9  deployments.app   the composition root: the one module that binds the graph

`router` itself (the package module) sits with router.wire; every other router module lives in a
wing (test_router_modules_live_in_a_wing)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("content", "models", "core", "deployments", "router")
LAYERS = {"content": 1, "models": 1, "core": 2, "deployments": 3, "router": 4,
          "router.wire": 4, "router.run": 5, "router.usage": 6, "router.services": 7,
          "router.http": 8, "deployments.app": 9}
WINGS = ("router.wire", "router.run", "router.usage", "router.services", "router.http")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {n for n in names if n in known}
    return found


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


GRAPH = {name: imports(path, set(modules())) for name, path in modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    upward = sorted(i for i in GRAPH[module] if layer(i) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a higher layer"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("router.")))
def test_router_modules_live_in_a_wing(module: str) -> None:
    assert module.startswith(tuple(w for w in WINGS)), f"{module} is in no wing of router/"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer(m) == 1))
def test_domain_imports_only_itself(module: str) -> None:
    package = module.split(".")[0]
    foreign = sorted(i for i in GRAPH[module] if i.split(".")[0] != package)
    assert not foreign, f"{module} is domain code but imports {foreign}"


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycles.append([*stack[stack.index(module):], module])
            return
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            if target != module and not module.startswith(target + "."):  # a package's own parent
                visit(target, [*stack, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
