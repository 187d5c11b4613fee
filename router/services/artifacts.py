"""Each validated artifact once per class: generate-content results that passed their schema (quiz,
flashcards, practice problems) or finished (an explanation or another text type whose answer ended
with finish_reason "stop") are kept under the exact inputs that determine them, scoped to the
caller's tenant (or, with `artifacts.scope: group`, to the caller's group in it, so that one
class's artifacts never reach another's), for `artifacts.ttl_s`, and replayed to an identical later
request, billed nothing. Single flight shares a run among identical requests in flight; this shares
it across time. Exact keys only: no similarity matching (a near question is another question).

The key is the SHA-256 of: the scope (the tenant, or tenant/group), the content, the content type,
the difficulty (after adaptation), TEMPLATE_VERSION, the learner-profile bucket (only the closed
lists: learning style, accommodations, language), the model asked for and max_tokens. A learner who
described themselves in their own words (a description, interests or a level) is never cached: that
text personalises the artifact for one learner, and it would keep the learner's words in the cache."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from content.profile import LearnerProfile
from content.templates import TEMPLATE_VERSION
from core.config import ArtifactsConfig
from router.services.singleflight import Event
from router.usage.sharedstate import SharedState, StateUnavailable
from router.wire.learnx import GenerateContentRequest

PREFIX = "learnx:artifact:"


class ArtifactStore(Protocol):
    async def get(self, key: str) -> list[Event] | None: ...

    async def put(self, key: str, events: list[Event]) -> None: ...


class MemoryArtifacts:
    """This replica's artifacts: a bounded LRU whose entries expire after `ttl_s`."""

    def __init__(self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max_items = max_items
        self._ttl_s = ttl_s
        self._clock = clock

    async def get(self, key: str) -> list[Event] | None:
        found = self._items.get(key)
        if found is None or found[0] <= self._clock():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        events: list[Event] = json.loads(found[1])
        return events

    async def put(self, key: str, events: list[Event]) -> None:
        self._items[key] = (self._clock() + self._ttl_s, json.dumps(events))
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)


class RedisArtifacts:
    """Artifacts every replica shares, expiring in Redis; while Redis is down, every request misses."""

    def __init__(self, state: SharedState, ttl_s: int):
        self._state = state
        self._ttl_s = ttl_s

    async def get(self, key: str) -> list[Event] | None:
        try:
            found = await self._state.run(lambda: self._state.client.get(PREFIX + key))
        except StateUnavailable:
            return None
        if found is None:
            return None
        events: list[Event] = json.loads(found)
        return events

    async def put(self, key: str, events: list[Event]) -> None:
        try:
            await self._state.run(lambda: self._state.client.set(
                PREFIX + key, json.dumps(events), ex=self._ttl_s))
        except StateUnavailable:
            return


def artifact_store(config: ArtifactsConfig, shared: SharedState | None) -> ArtifactStore | None:
    """Redis when the service has one (redis_url), else this replica's memory; None when off."""
    if not config.enabled:
        return None
    if shared is not None:
        return RedisArtifacts(shared, config.ttl_s)
    return MemoryArtifacts(config.max_items, config.ttl_s)


def artifact_key(request: GenerateContentRequest, profile: LearnerProfile, difficulty: int,
                 scope: str, template: str = TEMPLATE_VERSION) -> str | None:
    """The exact key of what determines the artifact in its scope (a tenant, or tenant/group);
    None when the learner's own words shape it."""
    if profile.description or profile.interests or profile.level:
        return None
    bucket = [profile.learning_style, sorted(profile.accommodations), profile.language]
    canonical = json.dumps([scope, hashlib.sha256(request.content.encode()).hexdigest(),
                            request.content_type, difficulty, template, bucket,
                            request.model, request.max_tokens], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validated(events: list[Event]) -> bool:
    """A result worth keeping: its terminal event is `done`, with schema-valid data (structured
    types) or an answer that finished by itself (text types)."""
    if not events or events[-1]["type"] != "done":
        return False
    metadata = events[-1]["metadata"]
    return "data" in metadata or metadata.get("finish_reason") == "stop"
