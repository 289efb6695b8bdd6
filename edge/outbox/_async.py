"""``Outbox``: the asyncio face of ``OutboxStore`` (see ``edge.outbox``)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edge import OutboxError, OutboxFull
from edge.outbox._records import AppendResult, Item, OutboxStats, Row
from edge.outbox._store import OutboxStore

log = logging.getLogger("fusebox.edge.outbox")


@dataclass(slots=True)
class _Pending:
    items: Sequence[Item]
    future: asyncio.Future[AppendResult]


class Outbox:
    """The asyncio face of ``OutboxStore``: group commit on one worker thread.

    ``await outbox.append(items)`` returns once the items are durable. Callers that
    must not wait (a driver acknowledging its device only after the commit) use
    ``submit`` and attach to the returned future. ``changed`` is set after every
    commit so the uplink can wake up.
    """

    def __init__(self, store: OutboxStore, *, max_group_records: int = 50_000) -> None:
        self.store = store
        self.max_group_records = max_group_records
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._pending: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()
        # drivers refused for want of room wait here for the next prune
        self._room_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._single = 0  # groups to commit one by one after a failed group commit

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> Outbox:
        """An outbox on the database at ``path`` (``cap_bytes`` and ``synchronous`` go
        to the store); call :meth:`start` before use."""
        store_args = {
            k: kwargs.pop(k) for k in ("cap_bytes", "synchronous") if k in kwargs
        }
        return cls(OutboxStore(path, **store_args), **kwargs)

    async def start(self) -> None:
        """Start the commit task; appends are committed only while it runs."""
        self._task = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    async def close(self) -> None:
        """Commit what is queued, stop the commit task and close the database."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.call(self.store.close)
        self._executor.shutdown(wait=True)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a store method on the outbox thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, fn, *args
        )

    def submit(self, items: Sequence[Item]) -> asyncio.Future[AppendResult]:
        """Queue ``items`` for the next group commit; the future resolves once they are
        durable. Raises ``OutboxError`` while closing."""
        if self._closing:
            raise OutboxError("outbox is closing")
        fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(items, fut))
        self._wake.set()
        return fut

    async def append(self, items: Sequence[Item]) -> AppendResult:
        """Store ``items``; returns once they are committed (durable)."""
        return await self.submit(items)

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                take: list[_Pending] = []
                n = 0
                limit = 0 if self._single else self.max_group_records
                if self._single:
                    self._single -= 1
                while self._pending and (not take or n < limit):
                    p = self._pending.popleft()
                    take.append(p)
                    n += len(p.items)
                try:
                    results = await self.call(
                        self.store.append, [p.items for p in take]
                    )
                except OutboxFull as exc:
                    for p in take:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                except Exception as exc:
                    if len(take) == 1:
                        if not take[0].future.done():
                            take[0].future.set_exception(exc)
                        continue
                    # one caller's bad item must not fail the others sharing the
                    # commit: put each group back to be committed on its own
                    log.warning(
                        "outbox: group commit failed (%s); retrying singly", exc
                    )
                    for p in reversed(take):
                        self._pending.appendleft(p)
                    self._single = len(take)
                    continue
                for p, r in zip(take, results, strict=True):
                    if not p.future.done():
                        p.future.set_result(r)
                self.changed.set()
            if self._closing:
                return

    @property
    def last_seq(self) -> int:
        """The highest sequence number committed so far (read without a hop to
        the outbox thread: the counters are swapped in whole after each commit)."""
        return self.store.counters["last_seq"]

    # convenience wrappers for the uplink and metrics
    async def read(self, from_seq: int, to_seq: int | None, limit: int) -> list[Row]:
        """Rows with ``from_seq <= seq <= to_seq`` (no upper bound if None), in sequence
        order, at most ``limit``."""
        rows: list[Row] = await self.call(self.store.read, from_seq, to_seq, limit)
        return rows

    async def prune_range(self, first_seq: int, last_seq: int) -> int:
        """Delete a batch the cloud stored; returns rows deleted."""
        n: int = await self.call(self.store.prune_range, first_seq, last_seq)
        return self._freed(n)

    async def prune_through(self, seq: int) -> int:
        """Delete up to the cloud's contiguous watermark; returns rows deleted."""
        n: int = await self.call(self.store.prune_through, seq)
        return self._freed(n)

    async def quarantine_range(self, first_seq: int, last_seq: int, reason: str) -> int:
        """Move a rejected batch out of the send path; returns rows moved."""
        n: int = await self.call(
            self.store.quarantine_range, first_seq, last_seq, reason
        )
        return self._freed(n)

    def _freed(self, rows: int) -> int:
        if rows > 0:
            waiters, self._room_waiters = self._room_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        return rows

    async def wait_for_room(self, timeout_s: float) -> bool:
        """Until the next prune frees rows (True) or ``timeout_s`` passes (False).

        A driver refused with ``OutboxFull`` waits here rather than a blind
        backoff: readings flow again the moment the cloud's ack makes room, not
        up to a backoff's cap later."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._room_waiters:
                self._room_waiters.remove(waiter)

    async def stats(self) -> OutboxStats:
        """Backlog, oldest reading and disk use, after a best-effort ``maintain`` (which
        retries prunes the disk refused)."""
        s: OutboxStats = await self.call(self.store.maintained_stats)
        return s
