"""Prometheus text metrics and a health check on a tiny HTTP listener.

Deliberately not a web framework: two GET paths, served from the agent's event
loop, so the gateway needs nothing more to be scraped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("fusebox.edge.metrics")

Render = Callable[[], Awaitable[str]]


async def serve_metrics(listen: str, render: Render) -> None:
    host, _, port = listen.rpartition(":")

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

    server = await asyncio.start_server(handle, host or "127.0.0.1", int(port))
    log.info("metrics on http://%s/metrics", listen)
    async with server:
        await server.serve_forever()


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
