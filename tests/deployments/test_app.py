"""build_app: fail fast on a config the cluster cannot schedule."""

from __future__ import annotations

import pytest

from core.config import AppConfig
from deployments.app import MissingGPUs, check_gpus

GPU_CONFIG = {"auth": {"enabled": False},
              "local_models": [{"name": "smollm2-135m", "ray_actor_options": {"num_gpus": 1}}]}


def test_missing_gpus_fail_at_start_with_a_clear_message(serve_url: str) -> None:
    # serve_url: a Ray cluster is up (this machine has no GPU)
    with pytest.raises(MissingGPUs, match="asks for 1 GPU"):
        check_gpus(AppConfig.model_validate(GPU_CONFIG))


def test_gpu_check_can_be_waived_for_autoscaling_clusters(serve_url: str) -> None:
    check_gpus(AppConfig.model_validate({**GPU_CONFIG, "require_gpus_at_start": False}))
