"""One websocket connection to the CSMS and the library ``ChargePoint`` on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from simulators.ocpp_lib import make_call, result_dict

_wire_log = logging.getLogger("fusebox.sim.charger.wire")

RESPONSE_TIMEOUT_S: Final = 30
_RESULT_GRACE_S: Final = 0.2


class LinkDown(Exception):
    """The websocket closed while a call was outstanding."""


class _Session:
    """One websocket connection and the library ``ChargePoint`` on it."""

    def __init__(self, cp: Any, ws: ClientConnection) -> None:
        self.cp = cp
        self.ws = ws
        self.reader: asyncio.Task[None] = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.cp.start()

    async def call(
        self,
        version: str,
        action: str,
        payload: dict[str, Any],
        message_id: str | None,
        *,
        unchecked: bool = False,
    ) -> dict[str, Any]:
        """Send one CALL and return its result as a snake_case dict; ``LinkDown`` if
        the connection drops first, ``CallError`` for a CALLERROR. ``unchecked``
        skips the library's schema check of the request and its answer (a
        charger with ``--quirks`` sends what the schemas refuse)."""
        request = make_call(version, action, payload)
        pending = asyncio.ensure_future(
            self.cp.call(
                request,
                suppress=False,
                unique_id=message_id,
                skip_schema_validation=unchecked,
            )
        )
        # the outcome is read below, or dropped with the connection
        pending.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.wait(
                {pending, self.reader}, return_when=asyncio.FIRST_COMPLETED
            )
            if not pending.done():
                # the reader ended; a result read just before the close frame is
                # already queued and needs one more turn of the loop
                await asyncio.wait({pending}, timeout=_RESULT_GRACE_S)
        finally:
            if not pending.done():
                # cancel() only asks: the task is done once it has run its
                # cancel, and reading it before that raised InvalidStateError
                # ("Result is not set") and killed the simulator when the CSMS
                # died mid-call. Wait for it (bounded), then read it.
                pending.cancel()
                await asyncio.wait({pending}, timeout=_RESULT_GRACE_S)
        if not pending.done() or pending.cancelled():
            raise LinkDown(action)
        exc = pending.exception()
        if isinstance(exc, ConnectionClosed | TimeoutError):
            raise LinkDown(action) from exc
        if exc is not None:
            raise exc
        # a result that won the race with the cancel is a delivered message:
        # returning it keeps it from being sent again after the reconnect
        return result_dict(pending.result())
