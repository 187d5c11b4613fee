"""The provider registry: a hosted provider missing from any of its tables fails here, by name,
rather than at a learner's request (docs/extending.md lists the files outside Python too)."""

from __future__ import annotations

import re
from pathlib import Path

from core.config import AppConfig, ProvidersConfig
from core.env import ENV
from models.catalog import HOSTED_MODELS, KEY_ENV, PROVIDERS
from router.run import policy
from router.run.providers import HOSTED, build_providers

ROOT = Path(__file__).resolve().parents[4]
NAMED = set(PROVIDERS) - {"local"}  # the ProviderName literal's hosted names


def test_every_hosted_provider_is_in_every_table() -> None:
    tables = {"router/run/providers/__init__.py: HOSTED": set(HOSTED),
              "models/catalog.py: KEY_ENV": set(KEY_ENV),
              "core/config.py: ProvidersConfig": set(ProvidersConfig.model_fields),
              "models/catalog.py: HOSTED_MODELS' providers": {c.provider for c in HOSTED_MODELS}}
    for table, names in tables.items():
        assert names == NAMED, f"{table} has {sorted(names)}, ProviderName's hosted names are {sorted(NAMED)}"


def test_each_provider_is_built_with_its_key_and_named_as_registered() -> None:
    environ = {env: "sk-test" for env in KEY_ENV.values()}
    built = build_providers(AppConfig(auth={"enabled": False}), {}, environ)
    assert set(built) == NAMED
    assert build_providers(AppConfig(auth={"enabled": False}), {}, {}) == {}  # no key, no candidate


def test_hints_name_every_provider_and_key() -> None:
    assert all(name in ENV["AI_DEFAULT_PROVIDER"].hint for name in PROVIDERS)
    assert all(env in policy._KEYS for env in KEY_ENV.values())


def test_the_node_clients_provider_union_names_every_provider() -> None:
    types = (ROOT / "clients" / "node" / "src" / "types.ts").read_text()
    union = re.search(r"export type Provider = ([^;]+);", types)
    assert union is not None, "clients/node/src/types.ts: the Provider union is gone"
    assert set(re.findall(r'"([a-z]+)"', union.group(1))) == set(PROVIDERS)
