"""The whole Serve graph on fake engines, deployed beside the session's app under a prefix of its
own, its replicas asking for no CPU (the session's app holds the box's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import serve

from deployments.app import build_graph
from tests.fakes.inprocess import config
from tests.fakes.scripted import fake_encoder

NO_CPU = {"ray_actor_options": {"num_cpus": 0}}


@contextmanager
def fake_graph(tmp: Path, name: str, local_model: dict[str, Any],
               engine_factory: Callable[..., Any]) -> Iterator[str]:
    """Serve the graph as app `learnx-{name}` at `/{name}`; yields that prefix."""
    app_config = config(tmp, auth={"enabled": False}, local_models=[{**local_model, **NO_CPU}],
                        router=NO_CPU, embedder=NO_CPU)
    serve.run(build_graph(app_config, engine_factory, fake_encoder), name=f"learnx-{name}",
              route_prefix=f"/{name}")
    try:
        yield f"/{name}"
    finally:
        serve.delete(f"learnx-{name}")
