"""A minimal MQTT 3.1.1 client on ``asyncio.Protocol``: one object per connection.

Why not aiomqtt/paho here: a simulated gateway needs its own connection (its own
client id and account, as the broker's per-gateway ACL demands), so a fleet holds
thousands of them in one process. A paho client is a thread-safe object with its
own socket pair, buffers and a reader task in aiomqtt (measured in the fleet
README: tens of KiB each); this protocol object is a transport, a ``bytearray``
and a keep-alive timer, with no task of its own. It speaks only what a gateway
needs: CONNECT (will, user, password, clean session), SUBSCRIBE QoS 1, PUBLISH
QoS 0/1 both ways (PUBACK sent and counted), PINGREQ, DISCONNECT.

Exceptions::

    MqttLinkError (ConnectionError)
    └── MqttRefused    CONNACK with a non-zero return code (``code``: 4 bad login,
                       5 not authorised)
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MqttConnection", "MqttLinkError", "MqttRefused", "MqttWill", "open_link"]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0

OnPublish = Callable[[str, bytes, bool], None]


class MqttLinkError(ConnectionError):
    """The connection failed or broke; the gateway reconnects with backoff."""


class MqttRefused(MqttLinkError):
    """The broker refused the CONNECT (``code`` as in MQTT 3.1.1 CONNACK)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"CONNACK return code {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class MqttWill:
    """The last will: published by the broker when the link dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def _blob(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _packet(first: int, body: bytes) -> bytes:
    """Fixed header (type byte, variable-length remaining length) plus body."""
    n = len(body)
    head = bytearray([first])
    while True:
        byte, n = n % 128, n // 128
        head.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(head) + body


class MqttConnection(asyncio.Protocol):
    """One MQTT 3.1.1 client connection. Made by :func:`open_link`; then
    ``subscribe``, ``publish``, and await ``lost`` (set when the link ends)."""

    __slots__ = (
        "_buf",
        "_connack",
        "_keepalive_s",
        "_next_id",
        "_on_publish",
        "_ping",
        "_subacks",
        "lost",
        "pubacks",
        "transport",
    )

    def __init__(self, on_publish: OnPublish, keepalive_s: int) -> None:
        loop = asyncio.get_running_loop()
        self._on_publish = on_publish
        self._keepalive_s = keepalive_s
        self._buf = bytearray()
        self._connack: asyncio.Future[int] = loop.create_future()
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._ping: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.pubacks = 0

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; CONNECT is sent by ``open_link``."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Resolve ``lost`` and fail whatever still waits for an answer."""
        if self._ping is not None:
            self._ping.cancel()
        error = MqttLinkError(f"connection lost: {exc or 'closed'}")
        waiting: list[asyncio.Future[Any]] = [self._connack, *self._subacks.values()]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)
        self._subacks.clear()
        if not self.lost.done():
            self.lost.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        """Split the stream into packets and handle each."""
        buf = self._buf
        buf += data
        while len(buf) >= 2:
            length, shift, i = 0, 0, 1
            while True:
                if i >= len(buf):
                    return
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            if len(buf) < i + length:
                return
            first = buf[0]
            body = bytes(buf[i : i + length])
            del buf[: i + length]
            self._packet(first, body)

    def _packet(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == _PUBLISH:
            qos = (first >> 1) & 0x03
            (n,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + n].decode()
            at = 2 + n
            if qos:
                self._write(_packet(_PUBACK, body[at : at + 2]))
                at += 2
            self._on_publish(topic, body[at:], bool(first & 0x01))
        elif kind == _PUBACK:
            self.pubacks += 1
        elif kind == _CONNACK and not self._connack.done():
            self._connack.set_result(body[1] if len(body) > 1 else 255)
        elif kind == _SUBACK:
            (pid,) = struct.unpack_from("!H", body)
            fut = self._subacks.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(body[2:])

    # --------------------------------------------------------------------- client

    @property
    def connected(self) -> bool:
        """Whether the transport is still open."""
        return self.transport is not None and not self.transport.is_closing()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _arm_ping(self) -> None:
        self._write(_packet(_PINGREQ, b""))
        self._ping = asyncio.get_running_loop().call_later(
            self._keepalive_s * 0.75, self._arm_ping
        )

    async def handshake(
        self,
        client_id: str,
        *,
        username: str | None,
        password: str | None,
        will: MqttWill | None,
        timeout_s: float,
    ) -> None:
        """Send CONNECT (clean session) and wait for CONNACK; ``MqttRefused`` if
        the broker says no."""
        flags = 0x02
        payload = _text(client_id)
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            payload += _text(will.topic) + _blob(will.payload)
        if username is not None:
            flags |= 0x80
            payload += _text(username)
            if password is not None:
                flags |= 0x40
                payload += _text(password)
        head = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", self._keepalive_s)
        self._write(_packet(_CONNECT, head + payload))
        async with asyncio.timeout(timeout_s):
            code = await self._connack
        if code != 0:
            self.close()
            raise MqttRefused(code)
        self._ping = asyncio.get_running_loop().call_later(
            self._keepalive_s * 0.75, self._arm_ping
        )

    async def subscribe(self, filters: list[str], timeout_s: float) -> bytes:
        """Subscribe to ``filters`` at QoS 1; returns the SUBACK codes (0x80 =
        refused)."""
        pid = self._packet_id()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        body = struct.pack("!H", pid) + b"".join(_text(f) + b"\x01" for f in filters)
        self._write(_packet(_SUBSCRIBE, body))
        async with asyncio.timeout(timeout_s):
            return await fut

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Send a PUBLISH now (written to the socket buffer; no waiting). The
        sync contract's own answers, not the PUBACK, say what the cloud stored."""
        first = _PUBLISH | (qos << 1) | (1 if retain else 0)
        body = _text(topic)
        if qos:
            body += struct.pack("!H", self._packet_id())
        self._write(_packet(first, body + payload))

    def close(self, *, clean: bool = True) -> None:
        """DISCONNECT (the will is dropped) then close; ``clean=False`` aborts the
        socket like a cut cable, so the broker publishes the will."""
        if self.transport is None:
            return
        if clean:
            self._write(_packet(_DISCONNECT, b""))
            self.transport.close()
        else:
            self.transport.abort()


async def open_link(
    host: str,
    port: int,
    client_id: str,
    on_publish: OnPublish,
    *,
    username: str | None = None,
    password: str | None = None,
    will: MqttWill | None = None,
    keepalive_s: int = 60,
    timeout_s: float = 10.0,
) -> MqttConnection:
    """Connect and log in; raises ``MqttLinkError`` (or ``OSError``/``TimeoutError``
    from the socket) if that fails."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, link = await loop.create_connection(
            lambda: MqttConnection(on_publish, keepalive_s), host, port
        )
    try:
        await link.handshake(
            client_id,
            username=username,
            password=password,
            will=will,
            timeout_s=timeout_s,
        )
    except BaseException:
        link.close(clean=False)
        raise
    return link
