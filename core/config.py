"""The one config model (core/config_model.py: unknown keys are errors that name the key), built from
the Serve config's `args`, with the seed's environment variables applied on top as overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from core.budget_config import BudgetsConfig
from core.config_model import ConfigModel
from core.env import env_overrides, explain
from core.tiers import PRIORITY, Tier
from core.tracing_config import TracingConfig
from models import UnknownModel, find_embedding_model, find_local_model
from models.catalog import HOSTED_MODELS, ModelCard, ProviderName


class ActorOptions(ConfigModel):
    """Subset of Ray's ray_actor_options we support; num_gpus pins a replica to GPUs."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: int | None = Field(None, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)
    accelerator_type: str | None = None


class AutoscalingConfig(ConfigModel):
    min_replicas: int = Field(1, ge=0)
    max_replicas: PositiveInt = 1
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    look_back_period_s: float = Field(30.0, gt=0)  # the window ongoing requests are averaged over

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class DeploymentOptions(ConfigModel):
    num_replicas: PositiveInt = 1
    autoscaling_config: AutoscalingConfig | None = None
    max_ongoing_requests: PositiveInt = 16
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)

    # Serve's access log line per request; the router's requests are in the ledger and metrics.
    access_log: bool = True

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for Deployment.options()."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": self.ray_actor_options.model_dump(exclude_none=True),
        }
        if self.autoscaling_config is not None:
            opts["autoscaling_config"] = self.autoscaling_config.model_dump()
        else:
            opts["num_replicas"] = self.num_replicas
        if not self.access_log:
            opts["logging_config"] = {"enable_access_log": False}
        return opts


LLAMA_MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ: a context with more fails to start


class LlamaCppSettings(ConfigModel):
    n_ctx: PositiveInt = 2048  # one request's context: its prompt and answer
    n_threads: PositiveInt | None = None  # None: half the cores, as llama-cpp-python
    n_batch: PositiveInt = 512  # tokens decoded in one step, all sequences together
    # Requests one replica generates at once (continuous batching): each has a slot and n_ctx
    # tokens of KV cache, which its prompt's shared prefix shares with the other slots.
    parallel: PositiveInt = Field(4, le=256)
    # Requests that may wait for a slot; past it (or past a request's max_queue_wait_s) the
    # replica refuses at once, and the router serves the request elsewhere or answers 429.
    max_queued: int = Field(64, ge=0)
    # Slots kept for the assessment tier (core/tiers.py): lower tiers start only while more slots
    # are free than this (less those assessments hold), so an exam never waits for a slot; idle
    # when no exam runs.
    assessment_slots: int = Field(0, ge=0)
    # Prompt tokens the lower tiers read per step, all their prompts together (None: n_batch): a
    # step an assessment arrives during ends sooner, at some cost to the others' prefill.
    prefill_chunk: PositiveInt | None = None
    # Sequences beside the slots that keep a prefix waiting requests want when a slot's cache is
    # cut (a class waiting for its turn keeps its lesson read); None: one a slot; 0: none. Their
    # cells come out of the same KV cache and are dropped first when it is full.
    parked_prefixes: int | None = Field(None, ge=0, le=128)
    n_gpu_layers: int = Field(0, ge=-1)  # -1 offloads every layer
    repeat_penalty: float = Field(1.1, ge=0)  # greedy decoding of small models loops without it

    @model_validator(mode="after")
    def _a_slot_for_the_others(self) -> LlamaCppSettings:
        if self.assessment_slots >= self.parallel:
            raise ValueError(f"assessment_slots ({self.assessment_slots}) must be below parallel "
                             f"({self.parallel}): the other tiers need a slot")
        if self.parallel + (self.parked_prefixes or 0) > LLAMA_MAX_SEQUENCES:
            raise ValueError(f"parallel + parked_prefixes ({self.parallel} + "
                             f"{self.parked_prefixes}) must be at most {LLAMA_MAX_SEQUENCES}, "
                             "llama.cpp's sequences a context may have: lower parked_prefixes")
        return self


class VLLMSettings(ConfigModel):
    tensor_parallel_size: PositiveInt = 1
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: PositiveInt | None = None
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    quantization: str | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool = True  # requests that share a prompt prefix share its KV blocks
    # Sequences vLLM generates at once (its slots); past them requests wait in the replica, by
    # priority, up to max_queued; past that, or past a request's max_queue_wait_s, the replica
    # refuses at once and the router serves the request elsewhere or answers 429 (as llama_cpp's).
    max_num_seqs: PositiveInt = 64
    max_queued: int = Field(64, ge=0)
    # vLLM's own tool call parser for the model's output format (e.g. "hermes", "llama3_json",
    # "mistral"); with enable_auto_tool_choice the model decides when to call tools
    # (tool_choice "auto"), as in `vllm serve --enable-auto-tool-choice --tool-call-parser ...`.
    # Without them the model calls tools only when a call is required, under guided decoding.
    tool_call_parser: str | None = Field(None, min_length=1)
    enable_auto_tool_choice: bool = False
    repetition_penalty: float = Field(1.1, gt=0)  # vLLM's: 1 is none; as llama_cpp.repeat_penalty

    @model_validator(mode="after")
    def _auto_needs_a_parser(self) -> VLLMSettings:
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("enable_auto_tool_choice needs tool_call_parser (the model's tool "
                             "call format, e.g. hermes, llama3_json, mistral)")
        return self


class LocalModelConfig(DeploymentOptions):
    name: str
    engine: Literal["llama_cpp", "vllm"] = "llama_cpp"
    # None: for llama.cpp, its slots and queue (llama_cpp.parallel + max_queued), so that the
    # replica's own queue, which orders by priority, holds the waiting requests; for vLLM, its
    # vllm.max_num_seqs + vllm.max_queued.
    max_ongoing_requests: PositiveInt | None = None  # type: ignore[assignment]
    # Amortized cost of running the model (hardware, power), USD per million tokens; 0 by default.
    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    llama_cpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)

    def serve_options(self) -> dict[str, Any]:
        return {**super().serve_options(), "max_ongoing_requests": self.ongoing_limit()}

    def ongoing_limit(self) -> int:
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        if self.engine == "vllm":
            return self.vllm.max_num_seqs + self.vllm.max_queued
        return self.llama_cpp.parallel + self.llama_cpp.max_queued

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        """The registry's name for the model (an alias names the same model)."""
        try:
            return find_local_model(name).name
        except UnknownModel as error:  # a LookupError; pydantic reports ValueErrors
            raise ValueError(str(error)) from None


class HostedProviderConfig(ConfigModel):
    """A hosted API. Its key comes only from the environment (OPENAI_API_KEY / ANTHROPIC_API_KEY):
    secrets never live in config files. Without a key the provider is not a candidate."""

    enabled: bool = True
    base_url: str | None = None  # None: the SDK's own OPENAI_BASE_URL / ANTHROPIC_BASE_URL, or the API
    timeout_s: float = Field(60.0, gt=0)
    # Prompt caching on purpose (router/run/providers/caching.py): the shared prefix (tools, leading
    # system messages) of this many estimated tokens or more is cached (Anthropic: a breakpoint
    # at its end; OpenAI: a prompt_cache_key derived from it); null turns it off. A request turns
    # it off with `prompt_cache: false`.
    prompt_cache_min_tokens: PositiveInt | None = 1024


class ProvidersConfig(ConfigModel):
    openai: HostedProviderConfig = Field(default_factory=HostedProviderConfig)
    anthropic: HostedProviderConfig = Field(default_factory=HostedProviderConfig)


class BreakerConfig(ConfigModel):
    failure_threshold: PositiveInt = 5
    failure_rate: float | None = Field(None, gt=0, le=1)
    window_s: float = Field(60.0, gt=0)
    min_requests: PositiveInt = 10
    cooldown_s: float = Field(5.0, gt=0)
    cooldown_multiplier: float = Field(2.0, ge=1)
    max_cooldown_s: float = Field(300.0, gt=0)
    half_open_probes: PositiveInt = 1
    probe_timeout_s: float = Field(60.0, gt=0)  # a half-open probe that never reports frees its slot


class LearnedFirstTokenConfig(ConfigModel):
    """Per provider/model, the first-token limit learned from its observed times to first token
    (router/run/ttft.py): the `percentile` of the recent samples times `factor`, between `floor_s` and
    first_token_timeout_s, which is also the limit until `min_samples` are observed."""

    enabled: bool = True
    percentile: float = Field(0.95, gt=0, le=1)
    factor: float = Field(3.0, ge=1)
    floor_s: float = Field(5.0, gt=0)
    min_samples: PositiveInt = 20
    window: PositiveInt = 200  # the latest samples kept
    max_age_s: float = Field(900.0, gt=0)  # older samples are forgotten


class SpillOverWaits(ConfigModel):
    """router.spill_over_wait_s per tier: background spills first (a short wait), interactive
    after a longer one; an assessment never spills (null): it waits in the local queue, where its
    priority puts it before every lower tier's waiting request."""

    assessment: float | None = Field(None, gt=0)
    interactive: float | None = Field(2.0, gt=0)
    background: float | None = Field(0.5, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _one_for_all(cls, value: Any) -> Any:
        """A number (or null) is every tier's wait."""
        if value is None or isinstance(value, int | float):
            return dict.fromkeys(PRIORITY, value)
        return value

    def of(self, tier: Tier) -> float | None:
        wait: float | None = getattr(self, tier)
        return wait


class ResumeConfig(ConfigModel):
    """Streams that survive a dropped connection (docs/api.md, "Resuming a stream"): every event of
    a stream has an SSE id (`run_<hex>:<n>`), a generation whose client left runs on for `grace_s`
    (then it is cancelled, as a disconnect always was), and its events are kept for a reconnect
    with `Last-Event-ID`: in each router replica's memory, and in Redis (a stream per run) when
    `redis_url` is set, so that another replica resumes it."""

    enabled: bool = Field(True, description="number the events and keep runs for a reconnect")
    grace_s: float = Field(15.0, ge=0, description=(
        "how long a generation runs on after its last client left, waiting for a reconnect; 0: it "
        "is cancelled at once"))
    keep_s: float = Field(600.0, gt=0, description=(
        "how long a run's events are kept after its last event (a reconnect later is a 410)"))
    max_events: PositiveInt = Field(5000, description=(
        "events kept per run (the oldest are dropped past it; resuming before them is a 410)"))
    max_bytes: PositiveInt = Field(524_288, description="bytes of events kept per run, likewise")
    max_runs: PositiveInt = Field(256, description=(
        "runs kept in each replica's memory (the oldest ended run is dropped first)"))


class RouterConfig(DeploymentOptions):
    max_ongoing_requests: PositiveInt = 256
    access_log: bool = False  # measured: a log line per request is CPU on the hot path
    ray_actor_options: ActorOptions = Field(default_factory=lambda: ActorOptions(num_cpus=0.25))
    max_body_bytes: PositiveInt = 1_000_000
    max_messages: PositiveInt = 256
    max_tokens_limit: PositiveInt = 4096
    default_max_tokens: PositiveInt = 512
    # Waiting, all attempts together, until the answer's first delta (AI_REQUEST_TIMEOUT); after
    # it, a stream runs to its end: between deltas within idle_timeout_s, in all within max_stream_s.
    request_timeout_s: float = Field(60.0, gt=0)
    first_token_timeout_s: float = Field(30.0, gt=0)  # per attempt, until its first delta
    learned_first_token: LearnedFirstTokenConfig = Field(default_factory=LearnedFirstTokenConfig)
    idle_timeout_s: float = Field(15.0, gt=0)  # per attempt, between deltas
    # A local model that expects a request to wait longer than this for a slot hands it to the
    # next candidate (a hosted model the budget allows) while one remains; None: it waits. Per
    # tier (core/tiers.py); one number or null sets every tier.
    spill_over_wait_s: SpillOverWaits = Field(default_factory=lambda: SpillOverWaits())
    max_stream_s: float = Field(600.0, gt=0)  # from the answer's first delta to its end
    max_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(0.25, ge=0)
    retry_backoff_max_s: float = Field(8.0, ge=0)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    default_provider: ProviderName | None = None
    enable_fallback: bool = True
    enable_cost_optimization: bool = True
    resume: ResumeConfig = Field(default_factory=ResumeConfig)


class CacheConfig(ConfigModel):
    enabled: bool = True  # ENABLE_VECTOR_CACHE
    type: Literal["memory", "redis"] = "memory"  # VECTOR_CACHE_TYPE
    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    ttl_s: PositiveInt = 7 * 24 * 3600
    max_items: PositiveInt = 100_000  # memory cache bound (LRU)
    # Each router replica answers requests whose every item is cached before any Serve hop: from
    # Redis itself, or (memory type) from its own LRU of the vectors it served, this big.
    router_lookup: bool = True
    router_max_items: PositiveInt = 10_000
    key_prefix: str = "learnx:emb:"
    redis_timeout_s: float = Field(0.05, gt=0)  # past this, a lookup is a miss


class ArtifactsConfig(ConfigModel):
    """generate-content results kept per tenant (or per group) and replayed to identical requests,
    billed 0 (router/services/artifacts.py): in Redis when redis_url is set, else each replica's
    memory."""

    enabled: bool = Field(True, description="keep validated artifacts and replay them")
    scope: Literal["tenant", "group"] = Field(
        "tenant", description="who shares an artifact: the whole tenant (a school), or each group "
                              "(a class) its own; a request naming no group shares the tenant's")
    ttl_s: PositiveInt = Field(7 * 24 * 3600, description="how long an artifact is replayed")
    max_items: PositiveInt = Field(10_000, description="the memory store's bound (LRU)")


class BatchingConfig(ConfigModel):
    """Changeable at run time: it is the Embedder's Serve user_config."""

    max_batch_size: PositiveInt = 64
    batch_wait_timeout_s: float = Field(0.005, ge=0)


class EmbedderConfig(DeploymentOptions):
    enabled: bool = True
    model: str = "all-minilm-l6-v2"

    @field_validator("model")
    @classmethod
    def _registered(cls, model: str) -> str:
        try:
            return find_embedding_model(model).name
        except UnknownModel as error:
            raise ValueError(str(error)) from None
    n_threads: PositiveInt | None = None
    chunk_size: PositiveInt = 8  # texts per llama.cpp call (measured best here: docs/benchmarks.md)
    # Serve only fills a batch when a replica accepts that many requests at once.
    max_ongoing_requests: PositiveInt = 512
    ray_actor_options: ActorOptions = Field(default_factory=lambda: ActorOptions(num_cpus=0.5))
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    max_texts: PositiveInt = 2048
    max_text_chars: PositiveInt = 32_000

    @model_validator(mode="after")
    def _batches_can_fill(self) -> EmbedderConfig:
        if self.max_ongoing_requests < self.batching.max_batch_size:
            raise ValueError("max_ongoing_requests must be >= batching.max_batch_size, "
                             "or batches never fill")
        return self


KeyRole = Literal["service", "admin"]


class ApiKeyConfig(ConfigModel):
    """A calling service's key, stored only as the SHA-256 of the key (python -m router.http.auth new-key).
    A `service` key calls the AI API and reads usage one user at a time, of its tenant's users; an
    `admin` key can also read every user's usage, across tenants, and reset breakers (the operator
    routes). User ids belong to the key's tenant: the key itself unless `tenant` names one that
    other keys share (two apps of one platform, one set of learners)."""

    id: str = Field(min_length=1, max_length=64,  # names the caller in the ledger and rate limits
                    pattern=r"^[^\x00-\x1f]+$")
    tenant: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: KeyRole = "service"
    requests_per_minute: PositiveInt | None = None  # None: rate_limits.key_requests_per_minute
    tokens_per_minute: PositiveInt | None = None
    tier: Tier = Field("interactive", description=(
        "the tier of the key's requests that name none (core/tiers.py)"))
    max_tier: Tier = Field("interactive", description=(
        "the highest tier a request may ask for; above it the request is refused (403, param "
        "tier). `assessment` must be granted here."))

    @property
    def tenant_id(self) -> str:
        return self.tenant or self.id

    @model_validator(mode="after")
    def _tier_within_max(self) -> ApiKeyConfig:
        if PRIORITY[self.tier] > PRIORITY[self.max_tier]:
            raise ValueError(f"tier {self.tier!r} is above max_tier {self.max_tier!r}")
        return self


class AuthConfig(ConfigModel):
    enabled: bool = True  # false only for local development: every caller is then let in
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthConfig:
        if self.enabled and not self.api_keys:
            raise ValueError("auth is enabled but no api_keys are configured: add one "
                             "(python -m router.http.auth new-key NAME) or set auth.enabled: false "
                             "for local development")
        ids = [k.id for k in self.api_keys]
        if len(set(ids)) != len(ids):
            raise ValueError("api_keys ids must be unique")
        return self

    def keys_of(self, tenant: str) -> list[str]:
        """The ids of the keys whose users are `tenant`'s."""
        return [key.id for key in self.api_keys if key.tenant_id == tenant]


class RateLimitConfig(ConfigModel):
    """Token buckets refilled every minute; None turns a limit off. User limits apply to requests
    that name a user (`user` / `user_id`); the others are limited by their key's limits only."""

    user_requests_per_minute: PositiveInt | None = 120
    user_tokens_per_minute: PositiveInt | None = 200_000
    key_requests_per_minute: PositiveInt | None = 6_000
    key_tokens_per_minute: PositiveInt | None = 5_000_000


class LedgerConfig(ConfigModel):
    enabled: bool = True
    # SQLite file by default (relative paths are resolved where the app is built); PostgreSQL with
    # postgresql://... (DATABASE_URL).
    database_url: str = "sqlite:///var/usage.db"
    max_buffered: PositiveInt = 10_000  # records held while the database is unavailable
    batch_size: PositiveInt = 500
    flush_interval_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)


class CatalogConfig(ConfigModel):
    """The hosted models on offer: the built-in defaults (models/catalog.py HOSTED_MODELS, list
    prices with their sources) and the operator's own `models`, each a model card (provider,
    name, tier, context_window, input/cached input/cache write (5m, 1h)/output/reasoning prices per
    million tokens, aliases, tool_calling, min_cacheable_tokens). A model of a built-in's name
    replaces it (new prices); `builtins: false` offers only the operator's. Local models are
    declared in `local_models`."""

    builtins: bool = True
    models: list[ModelCard] = Field(default_factory=list)

    @model_validator(mode="after")
    def _hosted_and_unique(self) -> CatalogConfig:
        local = [m.name for m in self.models if m.provider == "local"]
        if local:
            raise ValueError(f"catalog.models declares {', '.join(local)} with provider local: "
                             "declare local models in local_models")
        names = [n for card in self.hosted() for n in (card.name, *card.aliases)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"the catalogue names {', '.join(dupes)} more than once (as a model or "
                             "an alias): give each name to one model")
        return self

    def hosted(self) -> list[ModelCard]:
        """The operator's models, then the built-ins they do not replace."""
        own = {m.name for m in self.models}
        builtins = [c for c in HOSTED_MODELS if c.name not in own] if self.builtins else []
        return [*self.models, *builtins]


class AppConfig(ConfigModel):
    enable_local_models: bool = True
    local_models_path: str | None = None
    local_models: list[LocalModelConfig] = Field(default_factory=list)
    router: RouterConfig = Field(default_factory=RouterConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    # Budgets and rate limits shared by every router replica (REDIS_URL); None: per replica.
    redis_url: str | None = None
    # Fail at start-up when the cluster lacks the GPUs a config asks for (a pending replica waits
    # forever otherwise). Turn off on autoscaling clusters that add GPU nodes on demand.
    require_gpus_at_start: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        names = [m.name for m in self.local_models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"local_models lists {', '.join(dupes)} more than once (an alias "
                             "names the same model): list each model once")
        return self

    @model_validator(mode="after")
    def _holds_outlast_requests(self) -> AppConfig:
        longest = self.router.request_timeout_s + self.router.max_stream_s
        if self.budgets.hold_ttl_s < longest:
            raise ValueError(f"budgets.hold_ttl_s ({self.budgets.hold_ttl_s:g} s) must be at least "
                             f"router.request_timeout_s + router.max_stream_s ({longest:g} s): a "
                             "hold that expires while its request runs leaves the spend uncounted")
        return self

    def gpus_needed(self) -> float:
        return sum(
            m.ray_actor_options.num_gpus * (m.autoscaling_config.min_replicas
                                             if m.autoscaling_config else m.num_replicas)
            for m in self.served_local_models()
        )

    def served_local_models(self) -> list[LocalModelConfig]:
        return self.local_models if self.enable_local_models else []


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(args: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Validate Serve `args` and apply env overrides. Raises ConfigError naming each bad setting."""
    environ = os.environ if environ is None else environ
    merged = _merge(dict(args or {}), env_overrides(environ))
    if "LOCAL_MODEL_GPU_LAYERS" in environ:
        layers = {"llama_cpp": {"n_gpu_layers": environ["LOCAL_MODEL_GPU_LAYERS"].strip()}}
        merged["local_models"] = [_merge(m, layers) for m in merged.get("local_models", [])]
    try:
        config = AppConfig.model_validate(merged)
    except ValidationError as error:
        raise explain(error, environ) from None
    # Replicas do not share the driver's working directory: pin a relative SQLite path to it.
    url = config.ledger.database_url
    if url.startswith("sqlite:///") and not os.path.isabs(url.removeprefix("sqlite:///")):
        path = os.path.abspath(url.removeprefix("sqlite:///"))
        config.ledger.database_url = f"sqlite:///{path}"
    return config
