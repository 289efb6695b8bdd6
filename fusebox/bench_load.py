"""Load primitives of the HTTP benchmarks (``fusebox bench api``): latency
statistics, one timed request classified as expected, refused (429/503 with
``Retry-After``: admission control's fast answer) or an error, and the wait a
well-behaved client takes after a busy answer (the ``Retry-After`` it was told,
plus full jitter)."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["BUSY", "Stats", "figures", "pct", "retry_wait_s", "timed"]


@dataclass
class Stats:
    """Latencies (s) of answered requests and the count of errors."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    refused: int = 0
    by_endpoint: dict[str, list[float]] = field(default_factory=dict)
    first_error: str | None = None

    def add(self, endpoint: str, seconds: float) -> None:
        """Count one answered request of ``endpoint``."""
        self.latencies.append(seconds)
        self.by_endpoint.setdefault(endpoint, []).append(seconds)

    def fail(self, what: str) -> None:
        """Count one error (the first one is kept to print)."""
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


def pct(sorted_s: list[float], q: float) -> float:
    """The ``q`` quantile of ``sorted_s`` (seconds), in milliseconds."""
    if not sorted_s:
        return 0.0
    k = min(len(sorted_s) - 1, max(0, round(q * len(sorted_s) + 0.5) - 1))
    return sorted_s[k] * 1000


def figures(stats: Stats, elapsed_s: float, cpu_s: float) -> dict[str, Any]:
    """Requests, rate, p50/p99/max, errors and refusals of ``stats`` over
    ``elapsed_s``, with the server's CPU ``cpu_s`` per request."""
    lat = sorted(stats.latencies)
    n = len(lat)
    out: dict[str, Any] = {
        "requests": n,
        "rps": round(n / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_ms": round(pct(lat, 0.50), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else 0.0,
        "errors": stats.errors,
        "refused": stats.refused,
        "server_cpu_ms_per_request": round(cpu_s * 1000 / n, 3) if n else None,
    }
    if len(stats.by_endpoint) > 1:
        out["by_endpoint"] = {
            name: {
                "requests": len(v),
                "p50_ms": round(pct(sorted(v), 0.50), 2),
                "p99_ms": round(pct(sorted(v), 0.99), 2),
            }
            for name, v in stats.by_endpoint.items()
        }
    if stats.first_error:
        out["first_error"] = stats.first_error
    return out


BUSY = (429, 503)


async def timed(
    stats: Stats,
    endpoint: str,
    send: Callable[[], Awaitable[httpx.Response]],
    expect: tuple[int, ...] = (200,),
) -> httpx.Response | None:
    """Send, time and classify one request: None unless ``expect`` ed; a busy
    answer with ``Retry-After`` is counted refused and returned."""
    t0 = time.perf_counter()
    try:
        r = await send()
    except httpx.HTTPError as exc:
        stats.fail(f"{endpoint}: {type(exc).__name__}: {exc}")
        return None
    dt = time.perf_counter() - t0
    if r.status_code in BUSY and "retry-after" in r.headers:
        stats.refused += 1
        return r
    if r.status_code not in expect:
        stats.fail(f"{endpoint}: {r.status_code} {r.text[:200]}")
        return None
    stats.add(endpoint, dt)
    return r


def retry_wait_s(r: httpx.Response, attempt: int) -> float:
    """How long a client waits after a busy answer: never less than its
    ``Retry-After``, plus full jitter over a window doubling per attempt."""
    told = r.headers.get("retry-after", "1")
    floor_s = float(told) if told.isdigit() else 1.0
    return floor_s + random.uniform(0, min(0.5 * 2**attempt, 4.0))
