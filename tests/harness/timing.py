"""Test time: one unit scaled by ``FUSEBOX_TEST_TIME_UNIT``, and polling until true.

Write every timeout as ``timeout(n)`` (n units) so that a slow machine is made slower,
not flaky: ``FUSEBOX_TEST_TIME_UNIT=3 ./scripts/test`` triples them all. Wait for a
condition with :func:`eventually` instead of sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["UNIT_S", "eventually", "timeout"]

_T = TypeVar("_T")

UNIT_S = float(os.environ.get("FUSEBOX_TEST_TIME_UNIT", "1.0"))
"""Seconds per test time unit (``FUSEBOX_TEST_TIME_UNIT``, default 1.0)."""


def timeout(n: float) -> float:
    """Return ``n`` test time units in seconds."""
    return n * UNIT_S


@overload
async def eventually(
    predicate: Callable[[], Awaitable[_T]],
    *,
    timeout_s: float,
    interval_s: float = ...,
    message: str,
) -> _T: ...


@overload
async def eventually(
    predicate: Callable[[], _T],
    *,
    timeout_s: float,
    interval_s: float = ...,
    message: str,
) -> _T: ...


async def eventually(
    predicate: Callable[[], Any],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    message: str,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return it.

    ``timeout_s`` is in seconds: pass ``timeout(n)``. An exception raised by the
    predicate counts as "not yet" (the service may still be starting). On timeout,
    raises ``AssertionError`` with ``message``, the last value and the last exception,
    so the failure says what was awaited and what was seen instead.
    """
    deadline = time.monotonic() + timeout_s
    last_value: object = None
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            outcome = predicate()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            last_value, last_error = outcome, None
            if outcome:
                return outcome
        except Exception as exc:  # includes AssertionError from assert-style checks
            last_error = exc
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            break
        await asyncio.sleep(min(interval_s, remaining_s))
    detail = f"last value: {last_value!r}"
    if last_error is not None:
        detail += f"; last error: {type(last_error).__name__}: {last_error}"
    raise AssertionError(
        f"{message} (not true after {timeout_s:.1f} s, {attempts} attempts; {detail})"
    )
