"""Prometheus text metrics and a health check on a tiny HTTP listener.

Deliberately not a web framework: two GET paths, served from the agent's event
loop, so the gateway needs nothing more to be scraped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from edge import ConfigError

log = logging.getLogger("fusebox.edge.metrics")

Render = Callable[[], Awaitable[str]]


def bind_metrics(listen: str) -> socket.socket:
    """Bind and listen on ``metrics.listen`` now, before the edge starts anything.

    Why not inside the agent's TaskGroup: a bind failure there only cancels the
    other tasks, and one of them losing that cancel (aiomqtt's connect on Python
    3.11) kept the edge running with no metrics and no word of why. Binding
    first makes a port in use a start-up error (``ConfigError``, exit 2) whose
    message says what to change.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"metrics.listen = {listen!r} is not host:port, e.g. 127.0.0.1:9108"
        )
    try:
        return socket.create_server(
            (host, int(port)),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (another process listens there)"
        else:
            why = exc.strerror or str(exc)
        raise ConfigError(
            f"metrics.listen = {listen!r}: cannot listen on {host}:{port}: {why}; "
            "choose another metrics.listen in the config (or remove it to turn "
            "metrics off), or stop the other process"
        ) from None


async def serve_metrics(sock: socket.socket, render: Render) -> None:
    """Serve /metrics and /healthz on ``sock`` (from :func:`bind_metrics`) until
    cancelled; the socket is closed on the way out."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                body, status = (await render()).encode(), "200 OK"
            elif path == "/healthz":
                body, status = b"ok\n", "200 OK"
            else:
                body, status = b"try /metrics or /healthz\n", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, sock=sock)
    except BaseException:
        sock.close()
        raise
    name = sock.getsockname()
    log.info("metrics on http://%s/metrics", _address(name[0], name[1]))
    async with server:
        await server.serve_forever()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_lines(samples: list[tuple[str, str, dict[str, str], float]]) -> str:
    """``(name, help, labels, value)`` samples to Prometheus text format."""
    out: list[str] = []
    seen: set[str] = set()
    for name, help_text, labels, value in samples:
        if name not in seen:
            kind = "counter" if name.endswith("_total") else "gauge"
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            seen.add(name)
        label = ",".join(f'{k}="{v}"' for k, v in labels.items())
        out.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
    return "\n".join(out) + "\n"


def parse_lines(text: str) -> dict[str, float]:
    """Prometheus text back to ``{'name{labels}': value}`` (for the demo and
    tests that read a running edge)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def age_seconds(oldest_ms: int | None) -> float:
    return 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
