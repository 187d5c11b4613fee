"""The order in which waiting requests get a local engine's slots: strict tiers first, then a fair
share of tokens across the groups (classes) waiting in a tier.

When more requests wait than slots free up, one class's burst must not starve another class: each
tier keeps a queue per group and a ring of the groups with requests waiting, served by deficit
round robin over estimated tokens (Shreedhar and Varghese, 1995). Each visit adds a quantum of
tokens to a group's deficit; the group's first request that may start is taken once its estimated
tokens fit the deficit, else the ring moves on. A group whose queue empties leaves the ring and
forgets its deficit, so idleness earns no credit. What a request did not use of its estimate (an
answer shorter than its max_tokens) is credited back to its group while the group still waits, so
the share is of tokens used, not promised. Within a group, requests keep their order of arrival."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

QUANTUM = 64  # tokens a group's deficit grows by per visit: a request or so of a class's followers


class Waiting(Protocol):
    @property
    def priority(self) -> int: ...  # higher first, strictly

    @property
    def group(self) -> str: ...  # shares its tier's slots fairly with the other groups

    @property
    def cost(self) -> int: ...  # estimated tokens: the answer's budget and the prompt to compute


W = TypeVar("W", bound=Waiting)


class _Tier(Generic[W]):
    """One tier's groups, each a queue in arrival order, and the deficit round robin over them."""

    def __init__(self, quantum: int):
        self.quantum = quantum
        self.queues: dict[str, list[W]] = {}
        self.ring: deque[str] = deque()  # groups with requests waiting; the one served now first
        self.deficit: dict[str, int] = {}
        self.credited = False  # the first group in the ring has had this visit's quantum

    def push(self, item: W) -> None:
        if item.group not in self.queues:
            self.queues[item.group] = []
            self.ring.append(item.group)
            self.deficit[item.group] = 0
        self.queues[item.group].append(item)

    def remove(self, item: W) -> None:
        queue = self.queues[item.group]
        queue.remove(item)
        if queue:
            return
        del self.queues[item.group], self.deficit[item.group]
        if self.ring[0] == item.group:
            self.credited = False
        self.ring.remove(item.group)

    def take(self, eligible: Callable[[W], bool]) -> W | None:
        ready = {group: item for group in self.ring
                 if (item := next((i for i in self.queues[group] if eligible(i)), None)) is not None}
        if not ready:
            return None
        while True:  # ends: each visit to a ready group adds a quantum to its deficit
            for _ in range(len(self.ring)):
                group = self.ring[0]
                item = ready.get(group)
                if item is not None:
                    if not self.credited:
                        self.deficit[group] += self.quantum
                        self.credited = True
                    if item.cost <= self.deficit[group]:
                        self.deficit[group] -= item.cost
                        self.remove(item)
                        return item
                self.ring.rotate(-1)
                self.credited = False
            self._skip_idle_rounds(ready)

    def _skip_idle_rounds(self, ready: dict[str, W]) -> None:
        """After a round in which no group could afford its request: the quanta of the rounds
        before the first in which one can, at once (a large request costs many quanta)."""
        rounds = min(-(-(item.cost - self.deficit[group]) // self.quantum)
                     for group, item in ready.items())
        for group in ready:
            self.deficit[group] += (rounds - 1) * self.quantum

    def ahead(self, group: str, cost: int) -> int:
        """Requests of this tier expected to start before a newcomer of `group` costing `cost`: its
        own group's, and of each other group about as many tokens as its group will have had."""
        mine = sum(i.cost for i in self.queues.get(group, ())) + cost
        count = 0
        for other, queue in self.queues.items():
            if other == group:
                count += len(queue)
                continue
            total = 0
            for item in queue:
                total += item.cost
                if total > mine:
                    break
                count += 1
        return count


class FairQueue(Generic[W]):
    """Waiting requests: taken by tier, then by deficit round robin across groups within a tier."""

    def __init__(self, quantum: int = QUANTUM):
        self._quantum = quantum
        self._tiers: dict[int, _Tier[W]] = {}

    def __len__(self) -> int:
        return sum(len(q) for tier in self._tiers.values() for q in tier.queues.values())

    def __iter__(self) -> Iterator[W]:
        for priority in sorted(self._tiers, reverse=True):
            for queue in self._tiers[priority].queues.values():
                yield from queue

    def push(self, item: W) -> None:
        self._tiers.setdefault(item.priority, _Tier(self._quantum)).push(item)

    def remove(self, item: W) -> None:
        self._tiers[item.priority].remove(item)

    def take(self, eligible: Callable[[W], bool] = lambda _: True) -> W | None:
        """The next request to start among those `eligible` (that may start now), charged to its
        group; None when none may."""
        for priority in sorted(self._tiers, reverse=True):
            item = self._tiers[priority].take(eligible)
            if item is not None:
                return item
        return None

    def settle(self, item: W, used: int) -> None:
        """A taken request ended having used `used` tokens: what its estimate overstated is its
        group's again (and what it understated, taken), if the group still waits."""
        tier = self._tiers.get(item.priority)
        if tier is not None and item.group in tier.deficit:
            tier.deficit[item.group] += item.cost - used

    def ahead(self, priority: int, group: str, cost: int) -> int:
        """Waiting requests expected to start before a newcomer: every one of a higher tier, and
        its fair share's worth of its own tier's."""
        higher = sum(len(q) for p, tier in self._tiers.items() if p > priority
                     for q in tier.queues.values())
        tier = self._tiers.get(priority)
        return higher + (tier.ahead(group, cost) if tier is not None else 0)

    def victim(self, below: int) -> W | None:
        """Whom a full queue sheds for a request of priority `below`: the latest request of the
        group that waits with the most tokens, in the lowest tier below it; None when no tier is
        lower (nothing is shed for an equal tier)."""
        for priority in sorted(self._tiers):
            if priority >= below:
                break
            queues = self._tiers[priority].queues
            if queues:
                group = max(queues, key=lambda g: sum(i.cost for i in queues[g]))
                return queues[group][-1]
        return None
