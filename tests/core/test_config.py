"""AppConfig: strict YAML args, the seed's env overrides, Serve options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from core.config import AppConfig, LlamaCppSettings, load_config
from core.env import ConfigError
from models.catalog import HOSTED_MODELS
from router.http.auth import check_exposure

SMOL = {"name": "smollm2-135m"}
DEV = {"auth": {"enabled": False}}  # configs must say how callers authenticate


def test_unknown_key_is_an_error_that_names_it() -> None:
    with pytest.raises(ConfigError, match="max_ongoin_requests"):
        load_config({**DEV, "local_models": [{**SMOL, "max_ongoin_requests": 3}]}, environ={})


def test_unknown_nested_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="n_thread"):
        load_config({**DEV, "local_models": [{**SMOL, "llama_cpp": {"n_thread": 1}}]}, environ={})


def test_unregistered_model_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="registered models: smollm2-135m"):
        load_config({**DEV, "local_models": [{"name": "gpt-2"}]}, environ={})


def test_duplicate_models_are_rejected() -> None:
    with pytest.raises(ConfigError, match="more than once"):
        load_config({**DEV, "local_models": [SMOL, SMOL]}, environ={})


def test_env_overrides_yaml() -> None:
    config = load_config(
        {**DEV, "local_models": [SMOL], "router": {"request_timeout_s": 5}},
        environ={"AI_REQUEST_TIMEOUT": "30", "AI_MAX_RETRIES": "1", "LOCAL_MODEL_GPU_LAYERS": "-1",
                 "LOCAL_MODELS_PATH": "/models", "ENABLE_LOCAL_MODELS": "false"})
    assert config.router.request_timeout_s == 30
    assert config.router.max_retries == 1
    assert config.local_models[0].llama_cpp.n_gpu_layers == -1
    assert config.local_models_path == "/models"
    assert config.served_local_models() == []


@pytest.mark.parametrize(("environ", "says"), [
    ({"ENABLE_LOCAL_MODELS": "maybe"}, "ENABLE_LOCAL_MODELS='maybe' (write true or false)"),
    ({"AI_REQUEST_TIMEOUT": "abc"}, "AI_REQUEST_TIMEOUT='abc' (write seconds, e.g. 30)"),
    ({"AI_MAX_RETRIES": "-1"}, "AI_MAX_RETRIES='-1' (write a whole number"),
    ({"AI_DEFAULT_PROVIDER": "azure"}, "AI_DEFAULT_PROVIDER='azure' (write local, openai or"),
    ({"LOCAL_MODEL_GPU_LAYERS": "-2"}, "LOCAL_MODEL_GPU_LAYERS='-2' (write a whole number"),
    ({"LEARNX_AUTH_ENABLED": "true", "LEARNX_API_KEYS": "nocolon"},
     "LEARNX_API_KEYS='nocolon' (write id:sha256,... as printed by python -m router.http.auth"),
])
def test_a_bad_environment_variable_is_named_with_what_to_write(environ: dict[str, str],
                                                                says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**DEV, "local_models": [SMOL]}, environ=environ)
    assert says in str(raised.value)


def test_a_model_listed_under_an_alias_too_is_a_duplicate() -> None:
    with pytest.raises(ConfigError, match=r"smollm2-135m more than once \(an alias"):
        load_config({**DEV, "local_models": [SMOL, {"name": "smollm2"}]}, environ={})
    config = load_config({**DEV, "local_models": [{"name": "smollm2"}]}, environ={})
    assert config.local_models[0].name == "smollm2-135m"


def test_an_unknown_embedding_model_fails_at_start_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"embedder\.model: unknown local embedding model 'bert'; "
                                          r"registered models: all-minilm-l6-v2"):
        load_config({**DEV, "embedder": {"model": "bert"}}, environ={})


def test_serve_options_use_autoscaling_when_configured() -> None:
    model = AppConfig.model_validate({**DEV, "local_models": [{
        **SMOL, "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 1}}]}).local_models[0]
    options = model.serve_options()
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert "num_replicas" not in options
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1, "resources": {}}


def test_autoscaling_bounds_are_checked() -> None:
    with pytest.raises(ValidationError, match="min_replicas must be <= max_replicas"):
        AppConfig.model_validate({**DEV, "local_models": [{
            **SMOL, "autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}]})


def test_gpus_needed_counts_minimum_replicas() -> None:
    config = AppConfig.model_validate({**DEV, "local_models": [{
        **SMOL, "num_replicas": 2, "ray_actor_options": {"num_gpus": 0.5}}]})
    assert config.gpus_needed() == 1.0


def test_auth_must_be_configured_or_disabled_explicitly() -> None:
    with pytest.raises(ConfigError, match="no api_keys are configured"):
        load_config({}, environ={})
    with pytest.raises(ConfigError, match="sha256"):
        load_config({"auth": {"api_keys": [{"id": "node", "sha256": "not-a-hash"}]}}, environ={})
    assert not load_config(DEV, environ={}).auth.enabled


def test_accounting_env_overrides() -> None:
    config = load_config({}, environ={
        "LEARNX_API_KEYS": f"node:{'a' * 64}, cron:{'b' * 64}", "REDIS_URL": "redis://r:6379/1",
        "DATABASE_URL": "postgresql://db/learnx"})
    assert [(k.id, k.sha256[0]) for k in config.auth.api_keys] == [("node", "a"), ("cron", "b")]
    assert config.redis_url == "redis://r:6379/1" == config.embedder.cache.redis_url
    assert config.ledger.database_url == "postgresql://db/learnx"
    assert not load_config({}, environ={"LEARNX_AUTH_ENABLED": "false"}).auth.enabled


def test_a_relative_sqlite_ledger_is_pinned_where_the_app_is_built() -> None:
    url = load_config(DEV, environ={}).ledger.database_url
    assert url == f"sqlite:///{Path.cwd() / 'var' / 'usage.db'}"


PRODUCTION_ENV = {"LEARNX_API_KEYS": f"node-backend:{'a' * 64}"}


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    serve_config = yaml.safe_load(path.read_text())
    for application in serve_config["applications"]:
        assert application["import_path"] == "deployments.app:build_app"
        load_config(application["args"], environ=PRODUCTION_ENV)


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_listen_beyond_loopback_only_with_auth(path: Path) -> None:
    serve_config = yaml.safe_load(path.read_text())
    host = serve_config["http_options"]["host"]
    for application in serve_config["applications"]:
        auth = load_config(application["args"], environ=PRODUCTION_ENV).auth
        check_exposure(auth, host)


# An operator's own model (no built-in has its name), and a built-in's alias (whichever).
OWN = {"name": "an-operators-model", "provider": "anthropic", "tier": "small",
       "context_window": 200_000, "input_per_million": 1.0, "output_per_million": 5.0,
       "cached_input_per_million": 0.1, "cache_write_per_million": 1.25,
       "source": "the provider's price list, read by the operator"}
BUILTIN_ALIAS = next(alias for card in HOSTED_MODELS for alias in card.aliases)


def test_catalog_models_join_the_builtins_and_replace_one_of_the_same_name() -> None:
    replaced, *others = HOSTED_MODELS
    cheaper = {**OWN, "name": replaced.name, "provider": replaced.provider,
               "input_per_million": 0.01}
    config = AppConfig.model_validate({"auth": {"enabled": False},
                                       "catalog": {"models": [OWN, cheaper]}})
    hosted = {c.name: c for c in config.catalog.hosted()}
    assert hosted["an-operators-model"].cache_write_per_million == 1.25
    assert hosted[replaced.name].input_per_million == 0.01  # the operator's price
    assert {c.name for c in others} <= set(hosted)  # the other built-ins stay
    only = AppConfig.model_validate({"auth": {"enabled": False},
                                     "catalog": {"builtins": False, "models": [OWN]}})
    assert [c.name for c in only.catalog.hosted()] == ["an-operators-model"]


@pytest.mark.parametrize(("model", "problem"), [
    ({**OWN, "aliases": [BUILTIN_ALIAS]}, f"{BUILTIN_ALIAS} more than once"),
    ({**OWN, "provider": "local"}, "declare local models in local_models"),
    ({**OWN, "input_per_million": -1}, "greater than or equal to 0"),
    ({**OWN, "price": 1}, "price"),
])
def test_a_bad_catalog_model_fails_at_start_naming_the_problem(model: dict[str, object],
                                                               problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        AppConfig.model_validate({"auth": {"enabled": False}, "catalog": {"models": [model]}})


def test_a_hold_shorter_than_the_longest_request_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"budgets\.hold_ttl_s.*request_timeout_s.*max_stream_s"):
        load_config({**DEV, "budgets": {"hold_ttl_s": 300},
                     "router": {"request_timeout_s": 60, "max_stream_s": 600}}, environ={})
    assert load_config({**DEV, "budgets": {"hold_ttl_s": 660},
                        "router": {"request_timeout_s": 60, "max_stream_s": 600}},
                       environ={}).budgets.hold_ttl_s == 660


def test_vllm_repetition_penalty_is_configurable() -> None:
    config = load_config({**DEV, "local_models": [{**SMOL, "engine": "vllm",
                                                   "vllm": {"repetition_penalty": 1.0}}]},
                         environ={})
    assert config.local_models[0].vllm.repetition_penalty == 1.0
    with pytest.raises(ConfigError, match="repetition_penalty"):
        load_config({**DEV, "local_models": [{**SMOL, "vllm": {"repetition_penalty": 0}}]},
                    environ={})


def test_parked_prefixes_beyond_llama_cpps_sequences_are_refused_naming_the_limit() -> None:
    assert LlamaCppSettings(parallel=200).parked_prefixes is None  # as many as fit: 56
    with pytest.raises(ValidationError, match="at most 256"):
        LlamaCppSettings(parallel=200, parked_prefixes=100)
