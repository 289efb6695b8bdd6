"""``ChargerSim``: the top layer, the link to the CSMS (connect, boot, status,
heartbeats, reconnect) and the tasks of one charge point."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from protocols.backoff import Backoff, Reconnect
from simulators.charger._config import ChargerConfig
from simulators.charger._connectors import _STATUS_201
from simulators.charger._core import utc_text
from simulators.charger._handlers16 import _make_cp16
from simulators.charger._handlers201 import _make_cp201
from simulators.charger._remote import RemoteControlLayer
from simulators.charger._session import _RESULT_GRACE_S, LinkDown, _Session
from simulators.charger._state import Ledger
from simulators.ocpp_lib import SUBPROTOCOLS, CallError

log = logging.getLogger("fusebox.sim.charger")


class ChargerSim(RemoteControlLayer):
    """One simulated charge point: connectors with EVs, profiles, the offline queue,
    and the link to the CSMS."""

    def __init__(
        self,
        config: ChargerConfig,
        *,
        ledger: Ledger,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(config, ledger=ledger, clock=clock)
        # a transaction left open by the previous run ends now (see _transactions)
        self._end_interrupted()

    async def _run_scenario(self) -> None:
        started = self.clock_s()
        for step in self.config.scenario or ():
            if step.at_time is not None:
                ahead_s = (step.at_time - self.clock()).total_seconds()
            else:
                ahead_s = started + step.at_s - self.clock_s()
            delay = self.real_s(ahead_s)
            if delay > 0:
                await asyncio.sleep(delay)
            if step.action == "plug":
                self.plug(step.connector)
            elif step.action == "start":
                await self.start(step.connector, step.id_tag or self.config.id_tag)
            elif step.action == "stop":
                await self.stop(step.connector, "Local")
            else:
                self.unplug(step.connector)
        self.scenario_done = True
        self.queue_changed.set()

    async def _report_status(self) -> None:
        while True:
            await self.status_dirty.wait()
            self.status_dirty.clear()
            for connector in self.connectors.values():
                status = connector.status
                if status == connector.reported_status:
                    continue
                now = utc_text(self.clock())
                if self.version == "1.6":
                    payload: dict[str, Any] = {
                        "connector_id": connector.id,
                        "error_code": "NoError",
                        "status": status,
                        "timestamp": now,
                    }
                else:
                    payload = {
                        "timestamp": now,
                        "connector_status": _STATUS_201.get(status, "Occupied"),
                        "evse_id": connector.id,
                        "connector_id": 1,
                    }
                session = self.session
                if session is None:
                    return
                try:
                    await session.call(
                        self.version, "StatusNotification", payload, None
                    )
                except CallError as exc:
                    log.warning(
                        "charger %s: StatusNotification refused: %s",
                        self.config.charger_id,
                        exc,
                    )
                connector.reported_status = status

    async def _heartbeat(self, interval_s: float) -> None:
        last = time.monotonic()
        while True:
            due = last + (self.heartbeat_s or interval_s)
            self.heartbeat_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self.heartbeat_changed.wait()
                continue  # a new interval: recompute the due time
            last = time.monotonic()
            await self._send_now("Heartbeat", {})

    async def _connect(self) -> ClientConnection:
        headers = {}
        password = self._credentials()
        if password is not None:
            token = f"{self.config.charger_id}:".encode() + password
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        ws = await connect(
            self.config.endpoint,
            subprotocols=[SUBPROTOCOLS[self.version]],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=10,
        )
        if ws.subprotocol != SUBPROTOCOLS[self.version]:
            await ws.close()
            raise InvalidHandshake(f"CSMS did not accept {SUBPROTOCOLS[self.version]}")
        return ws

    async def _online(self, ws: ClientConnection) -> None:
        """One connection: boot, status, heartbeats, queue; returns when it drops or
        a reset asks for a reconnect."""
        make = _make_cp16 if self.version == "1.6" else _make_cp201
        session = _Session(make(self, ws), ws)
        self.session = session
        workers: list[asyncio.Task[Any]] = []
        try:
            while True:
                boot = await self._send_boot()
                interval_s = float(boot.get("interval") or 60)
                if boot.get("status") == "Accepted":
                    self.accepted = True
                    break
                log.info(
                    "charger %s: boot %s, retry in %.0f s",
                    self.config.charger_id,
                    boot.get("status"),
                    interval_s,
                )
                # a CSMS may configure a Pending charger (its password, say) and
                # close the connection for it to reconnect: stop waiting then
                dropped, _ = await asyncio.wait([session.reader], timeout=interval_s)
                if dropped:
                    return
            for connector in self.connectors.values():
                connector.reported_status = None
            self.status_dirty.set()
            workers = [
                asyncio.create_task(self._drain(session)),
                asyncio.create_task(self._report_status()),
                asyncio.create_task(self._heartbeat(interval_s)),
            ]
            reset = asyncio.create_task(self.reconnect_now.wait())
            workers.append(reset)
            done, _ = await asyncio.wait(
                [session.reader, *workers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not reset and task is not session.reader:
                    task.result()  # a worker failed: raise it
        except LinkDown:
            pass
        finally:
            self.session = None
            self.accepted = False
            if workers and not workers[0].done():
                # let a transaction message whose result is already in finish
                # (cancelling it now would send it again after the reconnect)
                await asyncio.wait(workers[:1], timeout=2 * _RESULT_GRACE_S)
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError, LinkDown):
                    await task
            session.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.reader
            await ws.close()
        self.reconnect_now.clear()

    async def _link(self) -> None:
        reconnect = Reconnect(Backoff(base_s=0.5, cap_s=self.config.max_backoff_s))
        ever = False
        while True:
            try:
                ws = await self._connect()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                delay_s = reconnect.failed(self._jitter)
                if reconnect.first_failure:
                    log.warning(
                        "charger %s: cannot connect to %s: %s",
                        self.config.charger_id,
                        self.config.endpoint,
                        exc,
                    )
                await asyncio.sleep(delay_s)
                continue
            if ever:
                self.reconnects += 1
            ever = True
            reconnect.succeeded()
            log.info(
                "charger %s: connected to %s (OCPP %s), %d queued",
                self.config.charger_id,
                self.config.endpoint,
                self.version,
                len(self.queue),
            )
            try:
                await self._online(ws)
            except CallError as exc:
                log.warning(
                    "charger %s: the CSMS refused the boot: %s",
                    self.config.charger_id,
                    exc,
                )
            log.warning(
                "charger %s: connection lost, %d queued",
                self.config.charger_id,
                len(self.queue),
            )
            await asyncio.sleep(reconnect.backoff.delay(0, self._jitter))

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set or, with a scenario, until it is done."""
        tasks = [
            asyncio.create_task(self._link(), name=f"{self.config.charger_id}-link"),
            asyncio.create_task(self._simulate(), name=f"{self.config.charger_id}-ev"),
        ]
        if self.config.scenario is not None:
            tasks.append(asyncio.create_task(self._run_scenario()))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self.idle and self.config.scenario is not None:
                    break
                failed = [t for t in tasks if t.done() and not t.cancelled()]
                for task in failed:
                    if task.exception() is not None and task.get_name().endswith(
                        ("-link", "-ev")
                    ):
                        raise task.exception()  # type: ignore[misc]
                await asyncio.wait(
                    [stopper, *tasks], timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stopper.cancel()
            for task in [*tasks, *self._tasks]:
                task.cancel()
            for task in [*tasks, *list(self._tasks)]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.state.data["clean_shutdown"] = True
            self._save()
        log.info(
            "charger %s stopped: %d transaction messages acknowledged, %d queued, "
            "%d reconnects",
            self.config.charger_id,
            self.acked,
            len(self.queue),
            self.reconnects,
        )
        return 0
