"""The usage ledger: one record per request, written in the background.

`Ledger.record()` never waits: it appends to a bounded buffer that a background task writes in
batches. When the database is unavailable the batch stays buffered and is retried with backoff; only
when the buffer is full is the oldest record dropped, and counted (learnx_ledger_dropped_total)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from core import metrics
from core.config import LedgerConfig
from core.errors import StorageUnavailable
from router.usage.record import UsageRecord
from router.usage.stores import LedgerStore

log = logging.getLogger("ray.serve")
T = TypeVar("T")


@dataclass
class LedgerStats:
    written: int = 0
    dropped: int = 0
    failures: int = 0
    last_error: str | None = None


class Ledger:
    def __init__(self, store: LedgerStore, config: LedgerConfig):
        self.store = store
        self._config = config
        self._buffer: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._migrated = False
        self._task: asyncio.Task[None] | None = None
        self.stats = LedgerStats()

    def record(self, record: UsageRecord) -> None:
        """Buffer a record for writing; never blocks."""
        if len(self._buffer) >= self._config.max_buffered:
            self._buffer.popleft()
            self.stats.dropped += 1
            metrics.record_ledger_dropped()
        self._buffer.append(record)
        metrics.record_ledger_buffered(len(self._buffer))
        if len(self._buffer) >= self._config.batch_size:
            self._wake.set()
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
        delay = self._config.flush_interval_s
        while self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                await self._write_batch()
                delay = self._config.flush_interval_s
            except Exception as error:  # the database is down or refused: keep, back off, retry
                self.stats.failures += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"[:300]
                metrics.record_ledger_write_failure()
                log.warning("usage ledger write failed (%s); %d records buffered, retrying",
                            type(error).__name__, len(self._buffer))
                delay = min(max(delay * 2, 0.1), self._config.retry_max_s)

    async def _write_batch(self) -> None:
        await self.ready()
        async with self._lock:
            batch = [self._buffer[i] for i in range(min(len(self._buffer), self._config.batch_size))]
            if not batch:
                return
            await self.store.insert([r.row() for r in batch])
            written = {id(r) for r in batch}  # records buffered meanwhile sit behind the batch
            while self._buffer and id(self._buffer[0]) in written:
                self._buffer.popleft()
            self.stats.written += len(batch)
            metrics.record_ledger_buffered(len(self._buffer))

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
        await self.store.close()

