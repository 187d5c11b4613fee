"""The usage ledger: one record per request, written in the background.

`Ledger.record()` never waits: it appends to a bounded buffer that a background task writes in
batches. When the database is unavailable the batch stays buffered and is retried with backoff (new
records do not cut the backoff short); only when the buffer is full is the oldest record dropped, and
counted (learnx_ledger_dropped_total). A batch the database refuses for what is in it is split until
the refused rows are found: they go to the dead-letter table as JSON (learnx_ledger_dead_lettered_total)
and every other record is written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from core import metrics
from core.config import LedgerConfig
from core.errors import StorageUnavailable
from router.usage.record import UsageRecord
from router.usage.stores import LedgerStore, RejectedRows

log = logging.getLogger("ray.serve")
T = TypeVar("T")


@dataclass
class LedgerStats:
    written: int = 0
    dropped: int = 0
    failures: int = 0
    dead_lettered: int = 0
    last_error: str | None = None


@dataclass
class _Backoff:
    """The writer's retry delay: doubled by each failure up to a cap, reset by a success."""

    base_s: float
    max_s: float
    delay_s: float = field(init=False)
    failing: bool = False

    def __post_init__(self) -> None:
        self.delay_s = self.base_s

    def failed(self) -> None:
        self.failing = True
        self.delay_s = min(max(self.delay_s * 2, 0.1), self.max_s)

    def succeeded(self) -> None:
        self.failing = False
        self.delay_s = self.base_s


class Ledger:
    def __init__(self, store: LedgerStore, config: LedgerConfig,
                 metrics_: metrics.LedgerMetrics | None = None):
        self.store = store
        self._config = config
        self._metrics = metrics_ or metrics.ledger_metrics()
        self._buffer: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._migrated = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = _Backoff(config.flush_interval_s, config.retry_max_s)
        self.stats = LedgerStats()

    def record(self, record: UsageRecord) -> None:
        """Buffer a record for writing; never blocks."""
        if len(self._buffer) >= self._config.max_buffered:
            self._buffer.popleft()
            self.stats.dropped += 1
            self._metrics.dropped.inc()
        self._buffer.append(record)
        self._metrics.buffered.set(len(self._buffer))
        if len(self._buffer) >= self._config.batch_size and not self._backoff.failing:
            self._wake.set()  # a full batch goes at once, unless the writer is backing off
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything buffered now; False if the database did not take it in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._buffer:
                    await self._write_batch()
            return True
        except Exception as error:  # a timeout or the database: False; the writer keeps retrying
            log.warning("ledger flush incomplete: %s", type(error).__name__)
            return False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def read(self, query: Callable[[LedgerStore], Awaitable[T]]) -> T:
        """Run a query over everything recorded so far by this replica."""
        await self.flush()
        try:
            await self.ready()
            return await query(self.store)
        except Exception as error:
            log.warning("usage ledger query failed: %s", type(error).__name__)
            raise StorageUnavailable("the usage ledger's database is unavailable; "
                                     "retry shortly") from None

    async def ready(self) -> None:
        async with self._lock:
            if not self._migrated:
                await self.store.migrate()
                self._migrated = True

    async def _run(self) -> None:
        while self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._backoff.delay_s)
            self._wake.clear()
            try:
                await self._write_batch()
                self._backoff.succeeded()
            except Exception as error:  # the database is down: keep, back off, retry
                self._backoff.failed()
                self._wake.clear()  # a batch that filled up meanwhile waits for the backoff too
                self.stats.failures += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"[:300]
                self._metrics.write_failures.inc()
                log.warning("usage ledger write failed (%s); %d records buffered, retrying in "
                            "%.1fs", type(error).__name__, len(self._buffer), self._backoff.delay_s)

    async def _write_batch(self) -> None:
        await self.ready()
        async with self._lock:
            batch = [self._buffer[i] for i in range(min(len(self._buffer), self._config.batch_size))]
            if not batch:
                return
            await self._insert(batch)
            written = {id(r) for r in batch}  # records buffered meanwhile sit behind the batch
            while self._buffer and id(self._buffer[0]) in written:
                self._buffer.popleft()
            self._metrics.buffered.set(len(self._buffer))

    async def _insert(self, batch: Sequence[UsageRecord]) -> None:
        """Insert the batch; if the database refuses it, halve it until the refused records are
        alone, and dead-letter those. A retry after an outage mid-way rewrites nothing twice: the
        service's record ids are the key."""
        try:
            await self.store.insert([r.row() for r in batch])
            self.stats.written += len(batch)
        except RejectedRows as error:
            if len(batch) > 1:
                middle = len(batch) // 2
                await self._insert(batch[:middle])
                await self._insert(batch[middle:])
                return
            await self._dead_letter(batch[0], error)

    async def _dead_letter(self, record: UsageRecord, error: RejectedRows) -> None:
        reason = ascii(str(error))[1:-1][:500]
        log.error("usage ledger refused record %s (%s); kept in usage_dead_letters", record.id,
                  reason)
        try:
            await self.store.dead_letter([(record.id, time.time(), reason,
                                           json.dumps(asdict(record), ensure_ascii=True))])
        except RejectedRows:  # cannot happen with ASCII JSON; never let it stall the writer
            log.error("usage ledger could not keep record %s: dropped", record.id)
            self.stats.dropped += 1
            self._metrics.dropped.inc()
            return
        self.stats.dead_lettered += 1
        self._metrics.dead_lettered.inc()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
        await self.store.close()
