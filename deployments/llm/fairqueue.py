"""The order in which waiting requests get a local engine's slots: strict tiers first, then a fair
share of tokens across the groups (classes) waiting in a tier.

When more requests wait than slots free up, one class's burst must not starve another class: each
tier keeps a queue per group and a ring of the groups with requests waiting, served by deficit round
robin over tokens (Shreedhar and Varghese, 1995). Each visit adds a quantum of tokens to a group's
deficit (also while its requests may not start yet: they wait for their lesson's prefix to be read,
which is waiting all the same); the group's first request that may start is taken once its cost (its
answer's budget of tokens) fits the deficit, else the ring moves on. The engine charges what the
estimate left out or overstated as it learns it (`charge`): the prompt tokens a request computes as
it starts, in answer tokens' worth of the engine's time (a class's first request reads the lesson;
its followers copy it), and the budget an answer did not use at its end. So a group's deficit may
fall below zero, and it waits more rounds; a class's first request is not held back for rounds to
pay for its lesson first. A group whose queue empties leaves the ring and forgets its credit, so
idleness earns none; but it keeps its debt, also what is charged after it left (a class's first
request, taken alone a moment before the class's burst arrives, is charged the lesson it reads as
it starts), until the rounds it is away have paid it, a quantum each, as if it had waited: else the
class that came first would read its lesson for free while each class after it pays for its own.
A group's credit (turns kept while its requests waited for their lesson) is spent a request more
a visit, not all at once: when several slots free together, the first groups in the ring spending
their credit on runs of requests would take every slot, and a class left without one waits
longer than its share (its lesson's cells are kept meanwhile: deployments/llm/sequences.py).
Within a group, requests keep their order of arrival."""

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
    def cost(self) -> int: ...  # tokens charged when taken: the answer's budget


W = TypeVar("W", bound=Waiting)


class _Tier(Generic[W]):
    """One tier's groups, each a queue in arrival order, and the deficit round robin over them."""

    def __init__(self, quantum: int):
        self.quantum = quantum
        self.queues: dict[str, list[W]] = {}
        self.ring: deque[str] = deque()  # groups with requests waiting; the one served now first
        self.deficit: dict[str, int] = {}
        self.owed: dict[str, int] = {}  # debts of groups not waiting, until repaid
        self.credited = False  # the first group in the ring has had this visit's quantum
        self.spent = 0  # tokens it has taken in this visit

    def push(self, item: W) -> None:
        if item.group not in self.queues:
            self.queues[item.group] = []
            self.ring.append(item.group)
            self.deficit[item.group] = -self.owed.pop(item.group, 0)
        self.queues[item.group].append(item)

    def charge(self, group: str, tokens: int) -> None:
        if group in self.deficit:
            self.deficit[group] -= tokens
        else:
            self._owe(group, self.owed.get(group, 0) + tokens)

    def _owe(self, group: str, tokens: int) -> None:
        if tokens > 0:
            self.owed[group] = tokens
        else:
            self.owed.pop(group, None)

    def _repay(self, tokens: int) -> None:
        """The groups away have waited `tokens` of a round's worth: their debts shrink by as much."""
        for group, debt in list(self.owed.items()):
            self._owe(group, debt - tokens)

    def remove(self, item: W) -> None:
        queue = self.queues[item.group]
        queue.remove(item)
        if queue:
            return
        self._owe(item.group, -self.deficit.pop(item.group))
        del self.queues[item.group]
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
                if not self.credited:  # a group waiting for a prefix being read has its turn too
                    self.deficit[group] += self.quantum
                    self.credited, self.spent = True, 0
                    self._repay(max(1, self.quantum // len(self.ring)))
                item = ready.get(group)
                if item is not None and item.cost <= self.deficit[group] \
                        and self.spent <= self.quantum:  # a visit's quantum, and one request more
                    self.deficit[group] -= item.cost
                    self.spent += item.cost
                    self.remove(item)
                    return item
                self.ring.rotate(-1)
                self.credited = False
            self._skip_idle_rounds(ready)

    def _skip_idle_rounds(self, ready: dict[str, W]) -> None:
        """After a round in which no group could afford its request: the quanta of the rounds
        before the first in which one can, at once (a group in debt waits many rounds)."""
        rounds = max(1, min(-(-(item.cost - self.deficit[group]) // self.quantum)
                            for group, item in ready.items()))  # 1: a group kept to its visit's
        for group in self.ring:
            self.deficit[group] += (rounds - 1) * self.quantum
        self._repay((rounds - 1) * self.quantum)

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

    def charge(self, item: W, tokens: int) -> None:
        """A taken request used `tokens` more than it was charged (fewer: negative), charged to its
        group; a group that no longer waits owes it until repaid (never credited)."""
        tier = self._tiers.get(item.priority)
        if tier is not None:
            tier.charge(item.group, tokens)

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
