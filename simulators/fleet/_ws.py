"""A minimal WebSocket client (RFC 6455) on ``asyncio.Protocol``, for fleet chargers.

A fleet charger is a load generator: 20,000 of them must cost the generator less
than the OCPP server they measure. The ``websockets`` library (which the real
simulated charger, ``simulators.charger``, uses) gives every connection its own
tasks, queues and keep-alive machinery; this client is a transport, a buffer and
a callback per text frame. It does the opening handshake (subprotocol, Basic
auth, the ``Sec-WebSocket-Accept`` check), masks what it sends, answers pings,
reassembles fragments and answers a close. No extensions (compression off, as
the OCPP server should run at scale).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
from collections.abc import Callable

__all__ = ["WsConnection", "WsError", "open_ws"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WsError(ConnectionError):
    """The handshake failed or the connection broke."""


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(
        n, "big"
    )


class WsConnection(asyncio.Protocol):
    """One client connection; ``open_ws`` makes it. ``send_text``; text frames go
    to ``on_text``; ``lost`` resolves when it ends."""

    __slots__ = (
        "_accept",
        "_buf",
        "_fragments",
        "_open",
        "lost",
        "on_text",
        "transport",
    )

    def __init__(self, on_text: Callable[[str], None], accept: str) -> None:
        loop = asyncio.get_running_loop()
        self.on_text = on_text
        self._accept = accept
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None
        self._open: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; ``open_ws`` writes the request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Resolve ``lost`` (and fail a handshake still waiting)."""
        if not self._open.done():
            self._open.set_exception(WsError(f"closed during handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        """The handshake response first, then frames."""
        self._buf += data
        if not self._open.done():
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            self._handshake(head)
        while self._frame():
            pass

    def _handshake(self, head: str) -> None:
        lines = head.split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:])
        }
        if not lines[0].startswith("HTTP/1.1 101"):
            self._open.set_exception(WsError(f"handshake refused: {lines[0]}"))
        elif headers.get("sec-websocket-accept") != self._accept:
            self._open.set_exception(WsError("bad Sec-WebSocket-Accept"))
        else:
            self._open.set_result(None)
            return
        self.close()

    def _frame(self) -> bool:
        buf = self._buf
        if len(buf) < 2:
            return False
        opcode, fin = buf[0] & 0x0F, bool(buf[0] & 0x80)
        masked, n, at = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return False
            (n,), at = struct.unpack_from("!H", buf, 2), 4
        elif n == 127:
            if len(buf) < 10:
                return False
            (n,), at = struct.unpack_from("!Q", buf, 2), 10
        key = b""
        if masked:
            key, at = bytes(buf[at : at + 4]), at + 4
        if len(buf) < at + n:
            return False
        payload = bytes(buf[at : at + n])
        del buf[: at + n]
        if masked:
            payload = _mask(payload, key)
        self._on_frame(opcode, fin, payload)
        return True

    def _on_frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == _PING:
            self._send(_PONG, payload)
        elif opcode == _CLOSE:
            self._send(_CLOSE, payload[:2])
            self.close()
        elif opcode in (_TEXT, _BINARY, 0):
            if opcode and fin:
                self.on_text(payload.decode())
                return
            parts = self._fragments if opcode == 0 and self._fragments else []
            parts.append(payload)
            self._fragments = None if fin else parts
            if fin:
                self.on_text(b"".join(parts).decode())

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        # the mask only keeps proxies from caching; a load generator's need not
        # be cryptographic
        key = random.getrandbits(32).to_bytes(4, "big")
        self.transport.write(head + key + _mask(payload, key))

    def send_text(self, text: str) -> None:
        """One text frame (written now, no waiting)."""
        self._send(_TEXT, text.encode())

    @property
    def connected(self) -> bool:
        """Whether the transport is open."""
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        """Send a close frame (1000, normal) and close the socket without waiting
        for the server's."""
        if self.transport is not None:
            self._send(_CLOSE, struct.pack("!H", 1000))
            self.transport.close()


async def open_ws(
    host: str,
    port: int,
    path: str,
    on_text: Callable[[str], None],
    *,
    subprotocol: str,
    basic_auth: tuple[str, str] | None = None,
    timeout_s: float = 30.0,
) -> WsConnection:
    """Connect and finish the opening handshake; ``WsError``/``OSError``/
    ``TimeoutError`` if that fails."""
    key = base64.b64encode(random.getrandbits(128).to_bytes(16, "big")).decode()
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    headers = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {subprotocol}",
    ]
    if basic_auth is not None:
        token = base64.b64encode(":".join(basic_auth).encode()).decode()
        headers.append(f"Authorization: Basic {token}")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, conn = await loop.create_connection(
            lambda: WsConnection(on_text, accept), host, port
        )
        assert conn.transport is not None
        conn.transport.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        try:
            await conn._open
        except BaseException:
            conn.close()
            raise
    return conn
