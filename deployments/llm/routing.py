"""Requests that share a prompt prefix go to the local model replica that holds it, balanced against
load (a Ray Serve request router; the idea of Ray Serve LLM's PrefixCacheAffinityRouter, without its
extra dependencies and shared actor).

The prompt's text is cut into blocks and each block hashed with the ones before it, as vLLM hashes
its KV blocks: two prompts share the hashes of the blocks they share. The router remembers which
replica each hash was last sent to. A request goes to the replica that holds its longest known
prefix, unless that replica's queue is longer than the shortest by more than `imbalance`; then, or
with nothing known, to the shorter queue of two picked at random (Serve's default)."""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ray.serve.config import RequestRouterConfig
from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from core.generation import GenerationParams

if TYPE_CHECKING:
    from ray.serve._private.common import RequestMetadata

BLOCK_CHARS = 256
IMBALANCE = 4  # how much longer than the shortest the owner's queue may be and still be chosen


def prefix_hashes(text: str, block_chars: int = BLOCK_CHARS) -> list[bytes]:
    """One hash per whole block of `text`, each covering every block before it."""
    hashes, digest = [], hashlib.blake2b(digest_size=16)
    for start in range(0, len(text) - block_chars + 1, block_chars):
        digest.update(text[start:start + block_chars].encode())
        hashes.append(digest.copy().digest())
    return hashes


def prompt_text(params: Any) -> str:
    if not isinstance(params, GenerationParams):
        return ""
    if params.prompt is not None:
        return params.prompt
    return "\n".join(str(m.get("content") or "") for m in params.messages)


def affinity_options(**router_kwargs: Any) -> dict[str, Any]:
    """A deployment's options that route its requests with PrefixAffinityRouter (`router_kwargs`:
    its initialize_state's); the deployment's methods take a GenerationParams first."""
    # Ray's config models are pydantic v1 models (its compat layer), which mypy's plugin misreads.
    return {"request_router_config": RequestRouterConfig(
        request_router_class=f"{__name__}.PrefixAffinityRouter",  # type: ignore[arg-type]
        request_router_kwargs=router_kwargs)}


class PrefixTable:
    """Which replica each prefix hash was last routed to; the least recently used forgotten first."""

    def __init__(self, max_entries: int):
        self._owners: OrderedDict[bytes, str] = OrderedDict()
        self._max = max_entries

    def owner(self, hashes: list[bytes], candidates: set[str]) -> str | None:
        """The candidate holding the longest of these prefixes, if any."""
        for digest in reversed(hashes):
            owner = self._owners.get(digest)
            if owner in candidates:
                return owner
        return None

    def remember(self, hashes: list[bytes], owner: str) -> None:
        for digest in hashes:
            self._owners[digest] = owner
            self._owners.move_to_end(digest)
        while len(self._owners) > self._max:
            self._owners.popitem(last=False)


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, imbalance: int = IMBALANCE, max_entries: int = 100_000,
                         **kwargs: Any) -> None:
        self._imbalance = imbalance
        self._table = PrefixTable(max_entries)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        by_id = {r.replica_id.to_full_id_str(): r for r in candidate_replicas}
        owner = self._table.owner(self._hashes(pending_request), set(by_id))
        others = _two(candidate_replicas)
        if owner is None or not await self._balanced(by_id[owner], candidate_replicas):
            return [others]
        return [[by_id[owner]], others]

    def _fulfill_next_pending_request(self, replica: RunningReplica,
                                      request_metadata: RequestMetadata | None = None) -> None:
        """The replica goes to the request it was chosen for. FIFOMixin alone hands it to the
        oldest request waiting, of another lesson perhaps, whenever routing waited on a queue
        length; Serve's own match, by internal request id, leaves waiting forever the requests that
        one replica's request makes at once (they share its id)."""
        for pending in self._pending_requests_to_fulfill:
            if pending.metadata is request_metadata and not pending.future.done():
                self._cancel_routing_task_for_pending_request(pending)
                self._record_queue_wait_time(pending)
                pending.future.set_result(replica)
                self._remove_pending_request_from_indices(pending)
                return
        super()._fulfill_next_pending_request(replica, request_metadata)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        self._table.remember(self._hashes(pending_request), replica_id.to_full_id_str())

    async def _balanced(self, owner: RunningReplica, candidates: list[RunningReplica]) -> bool:
        """Whether the owner's queue is at most `imbalance` longer than the shortest: Serve's
        cached lengths, and the replicas whose entry expired (10 s) asked, as Serve asks them."""
        lengths = {r: self.replica_queue_len_cache.get(r.replica_id) for r in candidates}
        unknown = [r for r, length in lengths.items() if length is None]
        lengths.update(await self._probe_queue_lens(unknown, 0))
        known = [length for length in lengths.values() if length is not None]
        own = lengths[owner]
        return own is not None and own <= min(known) + self._imbalance

    @staticmethod
    def _hashes(pending_request: PendingRequest | None) -> list[bytes]:
        if pending_request is None or not pending_request.args:
            return []
        return prefix_hashes(prompt_text(pending_request.args[0]))


def _two(replicas: list[RunningReplica]) -> list[RunningReplica]:
    """Two replicas at random (one if there is one): Serve picks the shorter queue of a rank."""
    return random.sample(replicas, min(2, len(replicas)))
