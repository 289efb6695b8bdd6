"""The MQTT shell: one connection that publishes a reading until the broker has it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time

from protocols.backoff import Backoff, Reconnect
from simulators.meter._config import MeterSimConfig
from simulators.mqtt_lib import Client, MqttError, ProtocolVersion

log = logging.getLogger("fusebox.sim.meter")


class _Stopped(Exception):
    """The stop event was set while waiting to connect or back off."""


class _Publisher:
    """One MQTT connection that publishes a message until the broker has it.

    A watcher task iterates the client's (empty) message stream, which aiomqtt ends
    with ``MqttError`` when the connection drops: a publish waiting for its PUBACK
    then fails at once instead of after ``publish_timeout_s``. Logs connection state
    changes (connected, lost, back), not every failed attempt.
    """

    def __init__(self, config: MeterSimConfig, stop: asyncio.Event) -> None:
        self._config = config
        self._stop = stop
        self._client: Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._link_watch: asyncio.Task[None] | None = None
        self._jitter = random.Random()
        self._down_since: float | None = None
        self._ever_connected = False
        self.reconnects = 0

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Publish until acknowledged (``True``) or until stopped while not
        connected (``False``: the broker does not have it)."""
        # 0.2 s, 0.4 s, ... up to --max-backoff: a meter's own reconnect
        reconnect = Reconnect(Backoff(0.2, self._config.max_backoff_s))
        while True:
            try:
                await self._publish_once(topic, payload)
            except _Stopped:
                return False
            except MqttError as exc:
                await self._lost(exc)
                if await _wait(self._stop, reconnect.failed(self._jitter)):
                    return False
                continue
            if self._down_since is not None:
                log.info(
                    "broker %s back after %.1f s; resent the held reading",
                    self._config.target.url(),
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
                self.reconnects += 1
            return True

    async def _publish_once(self, topic: str, payload: bytes) -> None:
        client, link_watch = await self._connected()
        publish = asyncio.ensure_future(
            client.publish(
                topic,
                payload,
                qos=self._config.qos,
                timeout=self._config.publish_timeout_s,
            )
        )
        await asyncio.wait({publish, link_watch}, return_when=asyncio.FIRST_COMPLETED)
        if publish.done():
            publish.result()  # raises MqttError if the publish failed
            return
        publish.cancel()
        with contextlib.suppress(asyncio.CancelledError, MqttError):
            await publish
        raise MqttError("connection lost while waiting for the PUBACK")

    async def _connected(self) -> tuple[Client, asyncio.Task[None]]:
        if self._client is not None and self._link_watch is not None:
            return self._client, self._link_watch
        if self._stop.is_set():
            raise _Stopped
        target = self._config.target
        client = Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            identifier=f"fusebox-sim-{self._config.device_id}",
            protocol=ProtocolVersion.V311,
            clean_session=True,
            keepalive=15,
            timeout=self._config.publish_timeout_s,
            tls_context=ssl.create_default_context() if target.tls else None,
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(client)
        if not self._ever_connected:
            self._ever_connected = True
            log.info("connected to %s as %s", target.url(), client.identifier)
        self._client, self._stack = client, stack
        self._link_watch = asyncio.create_task(
            _until_disconnected(client), name="meter-link-watch"
        )
        return client, self._link_watch

    async def _lost(self, exc: MqttError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "broker %s unavailable (%s); holding the reading and retrying",
                self._config.target.url(),
                exc,
            )
        else:
            log.debug("broker still unavailable: %s", exc)
        await self.close()

    async def close(self) -> None:
        """Drop the connection (gracefully if it is still up)."""
        stack, self._client, self._stack = self._stack, None, None
        watch, self._link_watch = self._link_watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, MqttError):
                await watch
        if stack is not None:
            with contextlib.suppress(MqttError, OSError):
                await stack.aclose()


async def _until_disconnected(client: Client) -> None:
    """Return (by ``MqttError``) when ``client`` loses its connection; the meter
    subscribes to nothing, so no message ever arrives."""
    async for _ in client.messages:
        pass


async def _wait(stop: asyncio.Event, timeout_s: float) -> bool:
    """Sleep ``timeout_s``; ``True`` if ``stop`` was set meanwhile."""
    if timeout_s <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await stop.wait()
    return stop.is_set()
