"""A fleet worker process: a slice of the fleet's gateways on one event loop.

The parent (:class:`simulators.fleet.Fleet`) talks to it over a pipe, one
command at a time, each answered once: ``stats``, ``offline``, ``online``,
``readings`` (on/off), ``backfill``, ``reconcile`` and ``stop``. The worker ignores
SIGINT (Ctrl-C reaches the whole process group; the parent decides) and stops
when the pipe closes, so an orphaned worker never outlives its parent.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import resource
import signal
import time
from dataclasses import asdict, dataclass, fields
from multiprocessing.connection import Connection
from typing import Any

import psutil

from simulators.fleet._chargers import ChargerPool, ChargerSettings
from simulators.fleet._gateway import GatewayCounters, GatewaySettings, SimGateway
from simulators.fleet._reconcile import reconcile

__all__ = ["WorkerSpec", "WorkerStats", "raise_fd_limit", "worker_main"]

log = logging.getLogger("fusebox.sim.fleet")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker runs: its gateways (and their accounts) and how."""

    index: int
    gateway_ids: tuple[str, ...]
    accounts: dict[str, tuple[str, str]]
    settings: GatewaySettings
    interval_s: float
    ramp_s: float
    seed: int
    online: bool = True
    producing: bool = True
    log_level: int = logging.WARNING
    charger_ids: tuple[str, ...] = ()
    chargers: ChargerSettings | None = None


@dataclass(slots=True)
class WorkerStats(GatewayCounters):
    """A worker's (or, summed, the fleet's) gateways right now."""

    gateways: int = 0
    connected: int = 0
    held: int = 0
    produced: int = 0
    in_flight: int = 0
    rss_bytes: int = 0
    cpu_ms: int = 0  # user + system CPU time of the worker processes
    processes: int = 1
    chargers: int = 0
    chargers_connected: int = 0
    charger_answers: int = 0
    charger_call_errors: int = 0
    charger_call_timeouts: int = 0
    charger_connect_failures: int = 0
    server_calls: int = 0

    def __add__(self, other: WorkerStats) -> WorkerStats:
        a, b = asdict(self), asdict(other)
        return WorkerStats(**{k: a[k] + b[k] for k in a})


def raise_fd_limit(wanted: int = 0) -> int:
    """Raise this process's open-file limit (RLIMIT_NOFILE): every connection is
    a file descriptor. To ``wanted`` if that is above the hard limit and the
    process may raise it (root), else to the hard limit. Returns the soft
    limit now; child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(wanted, hard), hard):
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
        except (ValueError, OSError):
            continue
        return target
    return soft


class _Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.rng = random.Random(f"{spec.seed}-{spec.index}")
        self.stop = asyncio.Event()
        self.producing = spec.producing
        self.gateways = [
            SimGateway(
                gid,
                spec.settings,
                self.rng,
                username=spec.accounts.get(gid, (None, None))[0],
                password=spec.accounts.get(gid, (None, None))[1],
            )
            for gid in spec.gateway_ids
        ]
        for gw in self.gateways:
            gw.online = spec.online
        self.pool: ChargerPool | None = None
        if spec.charger_ids and spec.chargers is not None:
            self.pool = ChargerPool(list(spec.charger_ids), spec.chargers, self.rng)
        self._pending: asyncio.Task[None] | None = None

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        tasks = [
            asyncio.create_task(self._start(gw, self.rng.uniform(0, self.spec.ramp_s)))
            for gw in self.gateways
        ]
        ticker = asyncio.create_task(self._produce())
        if self.pool is not None:
            tasks.append(asyncio.create_task(self.pool.run(self.stop)))
        try:
            await self.stop.wait()
        finally:
            loop.remove_reader(self.conn.fileno())
            ticker.cancel()
            for gw in self.gateways:
                gw.stop()
            if self.pool is not None:
                self.pool.close()
            await asyncio.gather(*tasks, ticker, return_exceptions=True)

    async def _start(self, gw: SimGateway, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await gw.run(self.stop)

    async def _produce(self) -> None:
        """Each gateway's meter every ``interval_s``, phases spread at random."""
        interval_s = self.spec.interval_s
        start = time.time()
        due = [
            (start + self.rng.uniform(0, interval_s), i)
            for i in range(len(self.gateways))
        ]
        heapq.heapify(due)
        if not due:
            return
        while due:
            now = time.time()
            while due[0][0] <= now:
                at, i = heapq.heappop(due)
                if self.producing:
                    self.gateways[i].produce(int(now * 1000), interval_s)
                heapq.heappush(due, (max(at + interval_s, now), i))
            await asyncio.sleep(min(0.5, max(0.0, due[0][0] - time.time())))

    def _backfill(self, seconds: float, interval_s: float) -> int:
        """Readings for the last ``seconds`` (after each gateway's newest), as if
        produced every ``interval_s`` while the cloud was away."""
        now_ms = int(time.time() * 1000)
        step_ms = max(1, int(interval_s * 1000))
        n = 0
        for gw in self.gateways:
            first = max(gw.last_ts_ms + 1, now_ms - int(seconds * 1000))
            for ts_ms in range(first, now_ms, step_ms):
                gw.produce(ts_ms, interval_s)
                n += 2
        return n

    def stats(self) -> WorkerStats:
        """The counters of every gateway of this worker, summed."""
        total = WorkerStats(gateways=len(self.gateways))
        names = [f.name for f in fields(GatewayCounters)]
        for gw in self.gateways:
            for name in names:
                setattr(total, name, getattr(total, name) + getattr(gw.counters, name))
            total.connected += gw.link is not None
            total.held += gw.outbox.count
            total.produced += gw.produced
            total.in_flight += len(gw.plan.in_flight) if gw.plan is not None else 0
        me = psutil.Process()
        total.rss_bytes = me.memory_info().rss
        total.cpu_ms = int(sum(me.cpu_times()[:2]) * 1000)
        if self.pool is not None:
            c = self.pool.snapshot()
            total.chargers = c.chargers
            total.chargers_connected = c.chargers_connected
            total.charger_answers = c.answered
            total.charger_call_errors = c.call_errors
            total.charger_call_timeouts = c.call_timeouts
            total.charger_connect_failures = c.connect_failures
            total.server_calls = c.server_calls
        return total

    def _on_command(self) -> None:
        try:
            command, *args = self.conn.recv()
        except (EOFError, OSError):
            self.stop.set()  # the parent is gone
            return
        if command == "reconcile":
            self._pending = asyncio.create_task(
                self._reply_later(reconcile(args[0], self.gateways))
            )
            return
        self.conn.send(self._run(command, args))

    async def _reply_later(self, work: Any) -> None:
        try:
            result = await work
        except Exception as exc:  # reported to the parent, which raises it
            result = RuntimeError(f"worker {self.spec.index}: {exc!r}")
        self.conn.send(result)

    def _run(self, command: str, args: list[Any]) -> Any:
        if command == "offline":
            for gw in self.gateways:
                gw.go_offline()
        elif command == "online":
            for gw in self.gateways:
                gw.go_online()
        elif command == "readings":
            self.producing = bool(args[0])
        elif command == "measure" and self.pool is not None:
            self.pool.measuring = bool(args[0])
            self.pool.snapshot(take_latencies=True)
        elif command == "latencies":
            pool = self.pool
            return (
                [] if pool is None else pool.snapshot(take_latencies=True).latencies_ms
            )
        elif command == "backfill":
            return self._backfill(float(args[0]), float(args[1]))
        elif command == "stop":
            self.stop.set()
        elif command not in ("stats", "measure"):
            return RuntimeError(f"unknown fleet command {command!r}")
        return self.stats()


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process's entry point (``multiprocessing``, spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)-7s fleet[{spec.index}] %(message)s",
    )
    raise_fd_limit()
    asyncio.run(_Worker(spec, conn).main())
    conn.close()
